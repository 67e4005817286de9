//! What the daemon hands `agentkeys-runner`: the sandbox spec (JSON on [`SPEC_FD`]), the
//! secrets (one sealed memfd each, from [`SECRET_FD_BASE`] on) and the agent's stdio
//! (fds 0–2). The runner answers on [`REPORT_FD`] with [`Report`] lines (JSON, one per line).
//!
//! Two ways to start it:
//! - **cold**: [`SPEC_FD`] is a pipe (or a file) holding the spec to EOF; stdio and the
//!   secret memfds are the runner's own fds 0–2 and 5….
//! - **warm** (the daemon keeps one runner started ahead of the next run): [`SPEC_FD`] is
//!   a unix stream socket carrying frames (one kind byte, a little-endian `u32` length,
//!   JSON). First [`FRAME_PREPARE`] with the run's [`CgroupPlan`]: the runner creates
//!   those groups, moves itself into the v1 ones (its init will be born in the v2 one) and
//!   reports [`Report::Prepared`]; its exec and start, and the groups, are done before any
//!   run asks.
//!   Then [`FRAME_SPEC`] with the spec, the agent's stdio and the secret memfds attached
//!   (SCM_RIGHTS, in that order), which the runner moves to fds 0–2 and 5….
//!
//! The spec carries no secret bytes: secret values travel only in the memfds, which the
//! runner reads into the agent's environment or its secrets directory and closes.
//!
//! Invariants checked by [`Spec::validate`] (the runner refuses a spec that fails them):
//! names are plain (no `/`, no NUL, no `=` in variable names), host paths are absolute,
//! every secret fd index is in range, limits are positive.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The runner reads the spec from this fd (a pipe; EOF ends the spec).
pub const SPEC_FD: i32 = 3;
/// The runner writes [`Report`] lines to this fd (a pipe the daemon reads).
pub const REPORT_FD: i32 = 4;
/// The first secret memfd; [`SecretRef::fd`] counts from here.
pub const SECRET_FD_BASE: i32 = 5;
/// Where the agent's MCP socket appears inside the sandbox (DESIGN §3.2).
pub const MCP_SOCKET_INSIDE: &str = "/run/agentkeys/mcp.sock";
/// Where secret files appear inside the sandbox (DESIGN §6).
pub const SECRETS_DIR_INSIDE: &str = "/run/agentkeys/secrets";
/// Where `agentkeysctl` (the MCP bridge) appears inside the sandbox.
pub const BRIDGE_INSIDE: &str = "/run/agentkeys/bin/agentkeysctl";
/// Where the workspace appears inside the sandbox.
pub const WORKSPACE_INSIDE: &str = "/workspace";
/// Upper bound on a spec's size (the runner stops reading past it).
pub const MAX_SPEC_BYTES: usize = 1 << 20;
/// Warm start: the frame with the run's [`CgroupPlan`].
pub const FRAME_PREPARE: u8 = b'P';
/// Warm start: the frame with the [`Spec`] and its fds.
pub const FRAME_SPEC: u8 = b'S';
/// Warm start: the frame (empty) that says the run's start is on record (durable), sent
/// after [`FRAME_SPEC`]; the command starts only after it, so the sandbox is built while the
/// daemon's disk works. The socket closing instead means the run must not start.
pub const FRAME_GO: u8 = b'G';
/// Most fds one frame may carry: a spec frame's stdio, secrets and workspace, or a batch
/// of the runner's mounts for the init.
pub const MAX_FRAME_FDS: usize = 64;

/// The runner's own fds that must outlive a warm start's placing of the spec's fds (at 0–2
/// and from [`SECRET_FD_BASE`] on) are moved to this number or above.
pub const OWN_FD_FLOOR: i32 = SECRET_FD_BASE + MAX_FRAME_FDS as i32;

/// One sandboxed run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// `run_` + lowercase base32; names the run's cgroups and its files under the runtime dir.
    pub run_id: String,
    /// The command and its arguments; `argv[0]` without a `/` is looked up in the sandbox's
    /// `PATH`. Never contains a secret (argv is world-readable in `/proc`).
    pub argv: Vec<String>,
    /// Plain environment of the agent (no secrets), in order; the runner adds nothing else
    /// except the secret variables.
    pub env: Vec<(String, String)>,
    /// Secret environment variables: `name` is the variable.
    pub secret_env: Vec<SecretRef>,
    /// Secret files: `name` is the file under [`SECRETS_DIR_INSIDE`] (0400, the agent's uid).
    pub secret_files: Vec<SecretRef>,
    pub ids: Ids,
    /// Host directory bound read-write at [`WORKSPACE_INSIDE`] through an idmapped mount
    /// (the agent's uid inside ↔ the owner's uid on disk). `None`: no workspace.
    pub workspace: Option<PathBuf>,
    /// Working directory inside the sandbox.
    pub cwd: PathBuf,
    /// Host path of this run's MCP socket, bound at [`MCP_SOCKET_INSIDE`].
    pub mcp_socket: Option<PathBuf>,
    /// Host path of `agentkeysctl`, bound read-only at [`BRIDGE_INSIDE`].
    pub bridge: Option<PathBuf>,
    /// Extra host paths bound read-only at the same path (configuration: `runner.ro_paths`).
    pub ro_paths: Vec<PathBuf>,
    pub net: Net,
    pub limits: Limits,
    pub cgroup: CgroupPlan,
    /// fd 0 is a terminal: the agent gets it as its controlling terminal.
    pub tty: bool,
    pub landlock: Enforcement,
    /// Host name inside the sandbox's UTS namespace.
    pub hostname: String,
    /// Host directory (root's, not writable by others) where runners keep snapshots of the
    /// sandbox's `/etc` files, one read-only mount for a run instead of a copy of each
    /// file at every start (`steps::etc_cache`). `None`: every run copies them.
    #[serde(default)]
    pub etc_cache: Option<PathBuf>,
}

/// A secret passed as the memfd at `SECRET_FD_BASE + fd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
    pub fd: u32,
}

/// Who the agent is, outside and inside its user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ids {
    /// The agent's own uid/gid on the host (from `runner.uid_range`; no login user has it).
    pub agent_uid: u32,
    pub agent_gid: u32,
    /// The owner's uid/gid: what the workspace's files belong to on disk.
    pub owner_uid: u32,
    pub owner_gid: u32,
    /// The unprivileged ids the agent sees for itself inside: the daemon gives it its
    /// owner's (see [`Ids::inside_are_owners`]), or 1000 when the owner is root.
    pub inside_uid: u32,
    pub inside_gid: u32,
}

impl Ids {
    /// Whether the agent has its owner's ids inside (as podman's `keep-id` does): then its
    /// user namespace maps the owner's ids to the agent's, which is exactly the
    /// workspace's idmapping, and the runner makes no other namespace for that.
    pub fn inside_are_owners(&self) -> bool {
        self.inside_uid == self.owner_uid && self.inside_gid == self.owner_gid
    }
}

/// The network the agent sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Net {
    /// A new network namespace with loopback only (the default).
    None,
    /// The host's network (explicit opt-in; recorded in status and audit).
    Host,
}

impl Net {
    pub fn as_str(self) -> &'static str {
        match self {
            Net::None => "none",
            Net::Host => "host",
        }
    }
}

/// Resource limits of one run (DESIGN §6 step 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub memory_bytes: u64,
    pub pids: u64,
    /// CPU bandwidth in thousandths of a CPU (1000 = one CPU).
    pub cpu_millis: u64,
}

impl Default for Limits {
    /// 2 GiB, 512 tasks, one CPU.
    fn default() -> Self {
        Self {
            memory_bytes: 2 << 30,
            pids: 512,
            cpu_millis: 1000,
        }
    }
}

/// The cgroups the runner creates and joins for this run: the directories themselves (the
/// daemon resolved the parents at start), one per hierarchy that carries a controller the
/// run uses, plus the v2 group used for membership and `cgroup.kill` where it exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CgroupPlan {
    /// The run's cgroup v2 directory, and which of memory/pids/cpu it limits there.
    pub v2: Option<CgroupDir>,
    /// The run's cgroup v1 directories, each with the controllers it limits.
    pub v1: Vec<CgroupDir>,
}

impl CgroupPlan {
    /// The group a run's runner keeps locked while it lives (the v2 one, else the first v1
    /// one): the daemons' sweep of leftover groups passes over it.
    pub fn held_dir(&self) -> Option<&std::path::Path> {
        self.v2
            .as_ref()
            .or(self.v1.first())
            .map(|d| d.path.as_path())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupDir {
    pub path: PathBuf,
    pub controllers: Vec<String>,
}

/// What happens when the kernel cannot enforce a landlock rule set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enforcement {
    /// Not fully enforced ⇒ the run fails (the default; STYLE §7).
    Required,
    /// Enforce what the kernel can; say so in the report.
    BestEffort,
}

/// One line the runner writes on [`REPORT_FD`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Report {
    /// Warm start: the run's cgroups exist and the runner is in them; it waits for the spec.
    Prepared,
    /// The sandbox is built and the command was executed; `pid` is the agent's pid on the
    /// host (the sandbox's init).
    Started { pid: i32 },
    /// A step of the plan failed before the command ran: the step's name and the error
    /// (never secret bytes).
    Failed { step: String, error: String },
    /// The command exited with this code.
    Exited { code: i32 },
    /// The command was killed by this signal.
    Signaled { signal: i32 },
}

/// A spec that breaks an invariant of the runner's contract.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SpecError {
    pub field: String,
    pub problem: String,
}

impl Spec {
    /// Checks the invariants in this module's docs; the runner refuses a spec that fails.
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |field: &str, problem: &str| {
            Err(SpecError {
                field: field.to_owned(),
                problem: problem.to_owned(),
            })
        };
        let id_ok = self.run_id.strip_prefix("run_").is_some_and(|r| {
            !r.is_empty()
                && r.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
        if !id_ok {
            return bad("run_id", "must be `run_` + lowercase base32");
        }
        if self.argv.is_empty() || self.argv.first().is_some_and(String::is_empty) {
            return bad("argv", "the command is missing");
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return bad("argv", "holds a NUL byte");
        }
        let var_ok = |n: &str| {
            !n.is_empty()
                && !n.contains(['=', '\0'])
                && !n.bytes().next().is_some_and(|c| c.is_ascii_digit())
        };
        for (k, v) in &self.env {
            if !var_ok(k) || v.contains('\0') {
                return bad("env", &format!("bad variable {k:?}"));
            }
        }
        let total = self.secret_env.len() + self.secret_files.len();
        // Stdio, the secrets and the workspace travel in one frame of a warm start.
        if total + 4 > MAX_FRAME_FDS {
            return bad(
                "secret_env",
                &format!("at most {} secrets per run", MAX_FRAME_FDS - 4),
            );
        }
        for s in &self.secret_env {
            if !var_ok(&s.name) {
                return bad("secret_env", &format!("bad variable name {:?}", s.name));
            }
        }
        for s in &self.secret_files {
            let plain = !s.name.is_empty()
                && s.name != "."
                && s.name != ".."
                && !s.name.contains(['/', '\0']);
            if !plain {
                return bad("secret_files", &format!("bad file name {:?}", s.name));
            }
        }
        let mut names: Vec<&str> = self.secret_files.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w.first() == w.get(1)) {
            return bad("secret_files", "a name is listed twice");
        }
        for s in self.secret_env.iter().chain(&self.secret_files) {
            if s.fd as usize >= total.max(1) {
                return bad("secret fd", &format!("index {} is out of range", s.fd));
            }
        }
        let abs = |p: &std::path::Path| {
            p.is_absolute() && !p.components().any(|c| c == std::path::Component::ParentDir)
        };
        for (field, p) in [
            ("workspace", self.workspace.as_ref()),
            ("mcp_socket", self.mcp_socket.as_ref()),
            ("bridge", self.bridge.as_ref()),
            ("cwd", Some(&self.cwd)),
            ("etc_cache", self.etc_cache.as_ref()),
        ] {
            if p.is_some_and(|p| !abs(p)) {
                return bad(field, "must be an absolute path without `..`");
            }
        }
        if self.ro_paths.iter().any(|p| !abs(p)) {
            return bad("ro_paths", "must be absolute paths without `..`");
        }
        let dirs = self.cgroup.v2.iter().chain(&self.cgroup.v1);
        if dirs.clone().any(|d| !abs(&d.path)) {
            return bad("cgroup", "paths must be absolute without `..`");
        }
        if self.limits.memory_bytes == 0 || self.limits.pids == 0 || self.limits.cpu_millis == 0 {
            return bad("limits", "must be positive");
        }
        let host_ok = !self.hostname.is_empty()
            && self.hostname.len() <= 64
            && self
                .hostname
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.');
        if !host_ok {
            return bad("hostname", "letters, digits, `-` and `.`, at most 64");
        }
        if self.ids.agent_uid == 0 || self.ids.agent_gid == 0 {
            return bad("ids", "the agent may not be root");
        }
        if self.ids.inside_uid == 0 || self.ids.inside_gid == 0 {
            return bad(
                "ids",
                "the agent may not be root inside its namespace either",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid spec for tests.
    pub(crate) fn sample_spec() -> Spec {
        Spec {
            run_id: "run_abc234".into(),
            argv: vec!["/bin/true".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            secret_env: vec![SecretRef {
                name: "ANTHROPIC_API_KEY".into(),
                fd: 0,
            }],
            secret_files: vec![SecretRef {
                name: "github".into(),
                fd: 1,
            }],
            ids: Ids {
                agent_uid: 61000,
                agent_gid: 61000,
                owner_uid: 1000,
                owner_gid: 1000,
                inside_uid: 1000,
                inside_gid: 1000,
            },
            workspace: Some("/home/u/proj".into()),
            cwd: "/workspace".into(),
            mcp_socket: None,
            bridge: None,
            ro_paths: vec![],
            net: Net::None,
            limits: Limits::default(),
            cgroup: CgroupPlan::default(),
            tty: false,
            landlock: Enforcement::Required,
            hostname: "agent".into(),
            etc_cache: Some("/run/agentkeys/etc-cache".into()),
        }
    }

    #[test]
    fn a_sample_spec_is_valid_and_round_trips() {
        let s = sample_spec();
        s.validate().unwrap();
        let back: Spec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        // A spec without the cache (an older daemon's) is still read: every run copies.
        let mut json: serde_json::Value = serde_json::to_value(&s).unwrap();
        json.as_object_mut().unwrap().remove("etc_cache");
        let back: Spec = serde_json::from_value(json).unwrap();
        assert_eq!(back.etc_cache, None);
    }

    #[test]
    fn bad_specs_are_refused() {
        type Tweak = Box<dyn Fn(&mut Spec)>;
        let cases: Vec<(&str, Tweak)> = vec![
            ("run_id", Box::new(|s| s.run_id = "../x".into())),
            ("argv", Box::new(|s| s.argv.clear())),
            (
                "secret_env",
                Box::new(|s| s.secret_env[0].name = "A=B".into()),
            ),
            (
                "secret_files",
                Box::new(|s| s.secret_files[0].name = "../x".into()),
            ),
            ("secret fd", Box::new(|s| s.secret_files[0].fd = 7)),
            ("workspace", Box::new(|s| s.workspace = Some("rel".into()))),
            ("limits", Box::new(|s| s.limits.pids = 0)),
            ("hostname", Box::new(|s| s.hostname = "a b".into())),
            ("ids", Box::new(|s| s.ids.agent_uid = 0)),
            ("ids", Box::new(|s| s.ids.inside_gid = 0)),
            (
                "etc_cache",
                Box::new(|s| s.etc_cache = Some("/run/../tmp".into())),
            ),
        ];
        for (field, tweak) in cases {
            let mut s = sample_spec();
            tweak(&mut s);
            let e = s.validate().unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }
}
