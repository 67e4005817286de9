//! Running commands under the real `agentkeys-runner` (kernel tier), without a daemon:
//! [`Sandbox`] prepares what the daemon would (run cgroups, an owner-owned workspace, a
//! spec, secret memfds) and launches through `agentkeysd::sandbox::launch`. The launch
//! path sits in [`Sandbox::spawn`] alone, so it can later go through `agentkeysctl run`.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use agentkeysd::sandbox::cgroups::read_layout;
use agentkeysd::sandbox::launch::{self, Outcome, Running};
use agentkeysd::sandbox::run_cgroups::RunCgroups;
use agentkeysd::sandbox::spec::{CgroupPlan, Enforcement, Ids, Limits, Net, SecretRef, Spec};

/// The owner of the workspace on the host (no login user here has this uid).
pub const OWNER_UID: u32 = 23456;
/// The agent's uid on the host.
pub const AGENT_UID: u32 = 61234;
/// The agent's uid inside its user namespace.
pub const INSIDE_UID: u32 = 1000;

/// Why the runner's kernel tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("the runner needs root".into());
    }
    if agentkeysd::sandbox::probe::landlock().abi().is_none() {
        return Some("landlock is not available".into());
    }
    if !crate::bin_dir().join("agentkeys-runner").exists() {
        return Some("agentkeys-runner is not built (cargo build --workspace --bins)".into());
    }
    None
}

/// What a finished run gave back.
#[derive(Debug)]
pub struct Output {
    pub outcome: Outcome,
    pub stdout: String,
    pub stderr: String,
}

/// One sandboxed run being prepared.
#[derive(Debug)]
pub struct Sandbox {
    pub spec: Spec,
    pub cgroups: RunCgroups,
    pub workspace: tempfile::TempDir,
    /// This sandbox's cache of `/etc` snapshots (0700, root's), as the daemon's runtime dir
    /// has one.
    pub etc_cache: tempfile::TempDir,
    secrets: Vec<OwnedFd>,
    out: tempfile::NamedTempFile,
    err: tempfile::NamedTempFile,
}

impl Sandbox {
    /// A spec like the daemon's: net none, default limits, a workspace owned by
    /// [`OWNER_UID`], fresh cgroups under this process's own groups, a cache of `/etc`
    /// snapshots of its own.
    pub fn new() -> Sandbox {
        let layout = read_layout().unwrap();
        let cgroups = RunCgroups::prepare(&layout).unwrap();
        let run_id = format!("run_t{}x{}", std::process::id(), rand_suffix());
        let workspace = tempfile::tempdir().unwrap();
        nix::unistd::chown(
            workspace.path(),
            Some(nix::unistd::Uid::from_raw(OWNER_UID)),
            Some(nix::unistd::Gid::from_raw(OWNER_UID)),
        )
        .unwrap();
        let etc_cache = tempfile::tempdir().unwrap();
        let spec = Spec {
            cgroup: cgroups.plan(&run_id),
            run_id,
            argv: vec!["/bin/true".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            secret_env: vec![],
            secret_files: vec![],
            ids: Ids {
                agent_uid: AGENT_UID,
                agent_gid: AGENT_UID,
                owner_uid: OWNER_UID,
                owner_gid: OWNER_UID,
                inside_uid: INSIDE_UID,
                inside_gid: INSIDE_UID,
            },
            workspace: Some(workspace.path().to_owned()),
            cwd: "/workspace".into(),
            mcp_socket: None,
            bridge: None,
            ro_paths: vec![],
            net: Net::None,
            limits: Limits::default(),
            tty: false,
            landlock: Enforcement::Required,
            hostname: "agent".into(),
            etc_cache: Some(etc_cache.path().to_owned()),
        };
        Sandbox {
            spec,
            cgroups,
            workspace,
            etc_cache,
            secrets: Vec::new(),
            out: tempfile::NamedTempFile::new().unwrap(),
            err: tempfile::NamedTempFile::new().unwrap(),
        }
    }

    /// Adds a secret variable.
    pub fn secret_env(&mut self, name: &str, value: &[u8]) -> &mut Self {
        let fd = self.push_secret(value);
        self.spec.secret_env.push(SecretRef {
            name: name.into(),
            fd,
        });
        self
    }

    /// Adds a secret file under `/run/agentkeys/secrets/`.
    pub fn secret_file(&mut self, name: &str, value: &[u8]) -> &mut Self {
        let fd = self.push_secret(value);
        self.spec.secret_files.push(SecretRef {
            name: name.into(),
            fd,
        });
        self
    }

    fn push_secret(&mut self, value: &[u8]) -> u32 {
        self.secrets
            .push(agentkeysd::vault::sealed_memfd_from_bytes(value).unwrap());
        (self.secrets.len() - 1) as u32
    }

    /// Starts `argv` in the sandbox (stdout/stderr to files read by [`Self::finish`], emptied
    /// first: a sandbox may run more than one command).
    pub fn spawn(&mut self, argv: &[&str]) -> Running {
        self.spec.argv = argv.iter().map(|s| (*s).to_owned()).collect();
        self.out.as_file().set_len(0).unwrap();
        self.err.as_file().set_len(0).unwrap();
        let stdin: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        let out: OwnedFd = self.out.reopen().unwrap().into();
        let err: OwnedFd = self.err.reopen().unwrap().into();
        let secrets = std::mem::take(&mut self.secrets);
        launch::spawn(
            &crate::bin_dir().join("agentkeys-runner"),
            &self.spec,
            [stdin, out, err],
            secrets,
        )
        .unwrap()
    }

    /// A runner started ahead (warm start) in this sandbox's cgroups, waiting for a spec.
    pub fn prepare_warm(&self) -> launch::Warm {
        launch::prepare(
            &crate::bin_dir().join("agentkeys-runner"),
            &self.spec.cgroup,
        )
        .unwrap()
    }

    /// Hands `argv` to a warm runner of this sandbox (see [`Self::prepare_warm`]) and lets
    /// the command start, as the daemon does once the run's start is on record.
    pub fn spawn_warm(&mut self, warm: launch::Warm, argv: &[&str]) -> std::io::Result<Running> {
        let mut running = self.spawn_warm_held(warm, argv)?;
        running.go(true);
        Ok(running)
    }

    /// [`Self::spawn_warm`] without the go: the caller says whether the start is on record.
    pub fn spawn_warm_held(
        &mut self,
        warm: launch::Warm,
        argv: &[&str],
    ) -> std::io::Result<Running> {
        self.spec.argv = argv.iter().map(|s| (*s).to_owned()).collect();
        let stdin: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        let out: OwnedFd = self.out.reopen().unwrap().into();
        let err: OwnedFd = self.err.reopen().unwrap().into();
        let secrets = std::mem::take(&mut self.secrets);
        warm.launch(&self.spec, [stdin, out, err], secrets)
    }

    /// Waits for the run and collects its output.
    pub fn finish(&mut self, running: Running) -> Output {
        let outcome = running.wait();
        let mut stdout = String::new();
        let mut stderr = String::new();
        self.out
            .reopen()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        self.err
            .reopen()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        Output {
            outcome,
            stdout,
            stderr,
        }
    }

    /// Runs `argv` to the end.
    pub fn run(&mut self, argv: &[&str]) -> Output {
        let r = self.spawn(argv);
        self.finish(r)
    }

    /// The run's cgroup plan.
    pub fn plan(&self) -> &CgroupPlan {
        &self.spec.cgroup
    }

    /// Host path of a file in the workspace.
    pub fn host_path(&self, rel: &str) -> PathBuf {
        self.workspace.path().join(rel)
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let plan = self.spec.cgroup.clone();
        let _ = self.cgroups.kill(&plan);
        let _ = self.cgroups.remove(&plan);
    }
}

/// `spec_tweaks` applied to a fresh [`Sandbox`], then `argv` run in it.
pub fn run_in_runner(spec_tweaks: impl FnOnce(&mut Spec), argv: &[&str]) -> Output {
    let mut sb = Sandbox::new();
    spec_tweaks(&mut sb.spec);
    sb.run(argv)
}

fn rand_suffix() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{n:x}")
}
