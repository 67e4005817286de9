//! `dev.agentkeys.Jobs1`: sandboxed runs — start one, list, inspect, cancel, signal.
//!
//! `Run` takes the agent's stdio as file descriptors (`stdin`, `stdout`, `stderr`: the
//! client's own, or the pty it made for an interactive agent) and returns once the command
//! runs in its sandbox; `JobStateChanged(job, state)` says when it ends (`exited`,
//! `killed`, `failed`), and `Get` says how. A client that only waits for its own run's end
//! passes `status`, a pipe that gets one line then (what `agentkeysctl run` does).
//! `Signal` is an addition to DESIGN §3.1's list: `agentkeysctl run` forwards the signals
//! it receives (Ctrl-C without a terminal).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use zbus::interface;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;

use crate::api::Error;
use crate::api::dict::{self, Dict, DictBuilder};
use crate::api::names::valid_name;
use crate::jobs::inject::Requested;
use crate::jobs::{Run, RunRequest, RunState};
use crate::sandbox::spec::{Limits, Net};

use super::super::authz::Caller;
use super::super::errors::{DaemonError, to_public};
use super::super::state::Shared;

#[derive(Debug)]
pub struct Jobs {
    pub shared: Arc<Shared>,
}

const RUN_OPTIONS: &[&str] = &[
    "argv",
    "agent",
    "workspace",
    "environment",
    "env",
    "files",
    "net",
    "memory",
    "pids",
    "cpu_millis",
    "timeout",
    "stdin",
    "status",
    "stdout",
    "stderr",
    "tty",
];

/// Plain variables a client may pass into the sandbox (how to draw and speak, never
/// secrets). Anything else in `environment` is refused.
const PASSED_VARIABLES: &[&str] = &[
    "TERM",
    "COLORTERM",
    "LANG",
    "LANGUAGE",
    "TZ",
    "NO_COLOR",
    "COLUMNS",
    "LINES",
];

/// Signals `Signal` forwards; anything else is refused (SIGKILL is `Cancel`).
const FORWARDED_SIGNALS: &[i32] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
    libc::SIGTSTP,
];

/// Longest argument, variable value, or path accepted.
const MAX_ARG: usize = 32 * 1024;

#[interface(name = "dev.agentkeys.Jobs1")]
impl Jobs {
    /// Starts `argv` in the hardened runner. Options: `argv` (as, required), `agent` (s),
    /// `workspace` (s, a directory the caller owns), `environment` (as, NAME=value of
    /// TERM, COLORTERM, LANG, LANGUAGE, TZ, NO_COLOR, COLUMNS, LINES), `env` (as,
    /// NAME=credential), `files` (as, credentials), `net` (s: none | host), `memory` (t,
    /// bytes), `pids` (t), `cpu_millis` (t, 1000 = one CPU), `timeout` (t, seconds),
    /// `stdin`/`stdout`/`stderr` (h, required), `tty` (b: stdin is a terminal to make the
    /// command's controlling terminal), `status` (h: the write end of a pipe; when the run
    /// has ended and its end is recorded, one JSON line `{"state": s, "exit_code": n}` is
    /// written to it and it is closed). Returns the run's id once the command runs.
    async fn run(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        spec: Dict,
    ) -> Result<String, Error> {
        self.do_run(&hdr, conn, spec)
            .await
            .map_err(|e| to_public("Run", e))
    }

    /// The caller's runs, live and recently ended (root: everyone's).
    async fn list(&self, #[zbus(header)] hdr: Header<'_>) -> Result<Vec<Dict>, Error> {
        self.do_list(&hdr).await.map_err(|e| to_public("List", e))
    }

    async fn get(&self, #[zbus(header)] hdr: Header<'_>, job: &str) -> Result<Dict, Error> {
        self.do_get(&hdr, job)
            .await
            .map_err(|e| to_public("Get", e))
    }

    /// Kills every process of the run; returns once none is left.
    async fn cancel(&self, #[zbus(header)] hdr: Header<'_>, job: &str) -> Result<(), Error> {
        self.do_cancel(&hdr, job)
            .await
            .map_err(|e| to_public("Cancel", e))
    }

    /// Forwards `signal` (INT, TERM, HUP, QUIT, USR1, USR2, WINCH, CONT, TSTP) to the
    /// run's command.
    async fn signal(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        job: &str,
        signal: i32,
    ) -> Result<(), Error> {
        self.do_signal(&hdr, job, signal)
            .await
            .map_err(|e| to_public("Signal", e))
    }

    /// A run started (`running`) or ended (`exited`, `killed`, `failed`).
    #[zbus(signal)]
    pub async fn job_state_changed(
        emitter: &SignalEmitter<'_>,
        job: &str,
        state: &str,
    ) -> zbus::Result<()>;
}

impl Jobs {
    async fn do_run(
        &self,
        hdr: &Header<'_>,
        conn: &zbus::Connection,
        spec: Dict,
    ) -> Result<String, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        let req = self.request(&caller, &spec)?;
        let run = crate::jobs::start(&self.shared, conn, req).await?;
        Ok(run.id.clone())
    }

    /// Validates `Run`'s options into a request. Nothing has happened yet when this fails.
    fn request(&self, caller: &Caller, spec: &Dict) -> Result<RunRequest, DaemonError> {
        dict::check_keys(spec, RUN_OPTIONS)?;
        let argv = dict::get_strs(spec, "argv")?.unwrap_or_default();
        if argv.is_empty() || argv[0].is_empty() {
            return Err(DaemonError::Invalid("argv: name the command to run".into()));
        }
        if argv.iter().any(|a| a.len() > MAX_ARG) {
            return Err(DaemonError::Invalid(format!(
                "argv: an argument is longer than {MAX_ARG} bytes"
            )));
        }
        let agent = dict::get_str(spec, "agent")?;
        if let Some(a) = &agent
            && (a.is_empty() || a.len() > crate::api::names::MAX_TEXT)
        {
            return Err(DaemonError::Invalid("agent: empty or too long".into()));
        }
        let workspace = match dict::get_str(spec, "workspace")? {
            Some(p) => Some(open_workspace(caller, &p)?),
            None => None,
        };
        let mut environment = Vec::new();
        for item in dict::get_strs(spec, "environment")?.unwrap_or_default() {
            let (name, value) = item.split_once('=').ok_or_else(|| {
                DaemonError::Invalid(format!("environment: '{item}' is not NAME=value"))
            })?;
            let passed = PASSED_VARIABLES.contains(&name) || name.starts_with("LC_");
            if !passed || !crate::api::names::valid_env_var(name) || value.len() > MAX_ARG {
                return Err(DaemonError::Invalid(format!(
                    "environment: {name} cannot be passed into a sandbox (only {} and LC_*)",
                    PASSED_VARIABLES.join(", ")
                )));
            }
            environment.push((name.to_owned(), value.to_owned()));
        }
        let mut requested = Requested::default();
        for item in dict::get_strs(spec, "env")?.unwrap_or_default() {
            let (name, cred) = item.split_once('=').ok_or_else(|| {
                DaemonError::Invalid(format!("env: '{item}' is not NAME=credential"))
            })?;
            requested.env.push((name.to_owned(), cred.to_owned()));
        }
        requested.files = dict::get_strs(spec, "files")?.unwrap_or_default();
        if let Some(bad) = requested.files.iter().find(|f| !valid_name(f)) {
            return Err(DaemonError::Invalid(format!(
                "files: '{bad}' is not a credential name"
            )));
        }
        let net = match dict::get_str(spec, "net")?.as_deref() {
            None | Some("none") => Net::None,
            Some("host") => Net::Host,
            Some(other) => {
                return Err(DaemonError::Invalid(format!(
                    "net: '{other}' is not a network mode (none, host)"
                )));
            }
        };
        let defaults: Limits = self.shared.config.runner.limits();
        let limits = Limits {
            memory_bytes: bounded(spec, "memory", defaults.memory_bytes, 16 << 20, 1 << 50)?,
            pids: bounded(spec, "pids", defaults.pids, 8, 1 << 22)?,
            cpu_millis: bounded(spec, "cpu_millis", defaults.cpu_millis, 10, 1_024_000)?,
        };
        let timeout = match dict::get_u64(spec, "timeout")? {
            Some(0) => return Err(DaemonError::Invalid("timeout: must be at least 1 s".into())),
            Some(s) => Some(Duration::from_secs(s.min(365 * 86_400))),
            None => None,
        };
        let fd = |key: &str| -> Result<OwnedFd, DaemonError> {
            dict::get_fd(spec, key)?.ok_or_else(|| {
                DaemonError::Invalid(format!("{key}: a file descriptor is required"))
            })
        };
        let stdio = [fd("stdin")?, fd("stdout")?, fd("stderr")?];
        let tty = dict::get_bool(spec, "tty")?.unwrap_or(false);
        if tty && !nix::unistd::isatty(&stdio[0]).unwrap_or(false) {
            return Err(DaemonError::Invalid("tty: stdin is not a terminal".into()));
        }
        let status = match dict::get_fd(spec, "status")? {
            Some(fd) => Some(status_pipe(fd)?),
            None => None,
        };
        Ok(RunRequest {
            caller: *caller,
            owner: caller.uid,
            agent,
            argv,
            workspace,
            environment,
            requested,
            net,
            limits,
            timeout,
            stdio,
            tty,
            status,
        })
    }

    async fn do_list(&self, hdr: &Header<'_>) -> Result<Vec<Dict>, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        let owner = (caller.uid != 0).then_some(caller.uid);
        Ok(self
            .shared
            .runs
            .list(owner)
            .iter()
            .map(|r| run_dict(r))
            .collect())
    }

    async fn do_get(&self, hdr: &Header<'_>, job: &str) -> Result<Dict, DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        Ok(run_dict(self.find(&caller, job)?.as_ref()))
    }

    async fn do_cancel(&self, hdr: &Header<'_>, job: &str) -> Result<(), DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        let run = self.find(&caller, job)?;
        self.shared.runs.kill(&run, "cancelled").await;
        tracing::info!(run = %run.id, uid = caller.uid, "run cancelled");
        Ok(())
    }

    async fn do_signal(&self, hdr: &Header<'_>, job: &str, signal: i32) -> Result<(), DaemonError> {
        let _in = self.shared.enter().await?;
        let caller = self.shared.owner_caller(hdr).await?;
        if !FORWARDED_SIGNALS.contains(&signal) {
            return Err(DaemonError::Invalid(format!(
                "signal {signal} is not forwarded (INT, TERM, HUP, QUIT, USR1, USR2, WINCH, CONT, TSTP; use Cancel to kill)"
            )));
        }
        let run = self.find(&caller, job)?;
        run.signal(signal)
            .map_err(|e| DaemonError::NotFound(format!("run {} is not running ({e})", run.id)))
    }

    /// The run `job` if the caller may see it (its owner, or root); the same `NotFound`
    /// otherwise, so run ids of others are not confirmed.
    fn find(&self, caller: &Caller, job: &str) -> Result<Arc<Run>, DaemonError> {
        self.shared
            .runs
            .get(job)
            .filter(|r| caller.uid == 0 || r.owner == caller.uid)
            .ok_or_else(|| DaemonError::NotFound(format!("no run '{job}'")))
    }
}

fn bounded(spec: &Dict, key: &str, default: u64, lo: u64, hi: u64) -> Result<u64, DaemonError> {
    let v = dict::get_u64(spec, key)?.unwrap_or(default);
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(DaemonError::Invalid(format!(
            "{key}: {v} is out of range ({lo}–{hi})"
        )))
    }
}

/// Opens the workspace for the runner: a directory the caller owns (root: any). Opened
/// with `O_PATH`, checked through the fd, and handed to the runner as that fd, so the
/// directory checked is the directory bound.
fn open_workspace(caller: &Caller, path: &str) -> Result<(PathBuf, OwnedFd), DaemonError> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::{Mode, fstat};
    let p = PathBuf::from(path);
    if !p.is_absolute() || path.len() > 4096 {
        return Err(DaemonError::Invalid(format!(
            "workspace: '{path}' is not an absolute path"
        )));
    }
    let fd = open(
        &p,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| DaemonError::Invalid(format!("workspace: cannot open {path}: {e}")))?;
    let st = fstat(&fd).map_err(|e| DaemonError::Invalid(format!("workspace: {path}: {e}")))?;
    if caller.uid != 0 && st.st_uid != caller.uid {
        return Err(DaemonError::Denied(format!(
            "workspace: {path} belongs to uid {}, not to you (uid {}): a run may only write to a directory of its owner",
            st.st_uid, caller.uid
        )));
    }
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or(p);
    Ok((real, fd))
}

/// `Run`'s `status`: the write end of a pipe, made non-blocking (the end is written to it
/// from the daemon's event loop, which must never wait on a client).
fn status_pipe(fd: OwnedFd) -> Result<OwnedFd, DaemonError> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let bad = || DaemonError::Invalid("status: expected the write end of a pipe".into());
    let st = nix::sys::stat::fstat(&fd).map_err(|_| bad())?;
    let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(|_| bad())?;
    let flags = OFlag::from_bits_retain(flags);
    if st.st_mode & libc::S_IFMT != libc::S_IFIFO || flags & OFlag::O_ACCMODE != OFlag::O_WRONLY {
        return Err(bad());
    }
    fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map_err(|_| bad())?;
    Ok(fd)
}

fn run_dict(r: &Run) -> Dict {
    let mut d = DictBuilder::new()
        .str("id", &r.id)
        .u32("owner", r.owner)
        .str("program", &r.program)
        .str("net", r.net.as_str())
        .i64("started_at", r.started_at)
        .opt_i64("ended_at", r.ended_at())
        .u32("runner_uid", r.runner_uid)
        .u64("memory", r.limits.memory_bytes)
        .u64("pids", r.limits.pids)
        .u64("cpu_millis", r.limits.cpu_millis)
        .strs("injected", &r.injected);
    if let (Some(id), Some(name)) = (&r.agent_id, &r.agent_name) {
        d = d.str("agent_id", id).str("agent", name);
    }
    if let Some(w) = &r.workspace {
        d = d.str("workspace", w.display().to_string());
    }
    let state = r.state();
    d = d.str("state", state.name());
    if let Some(code) = state.exit_code() {
        d = d.i64("exit_code", i64::from(code));
    }
    d = match state {
        RunState::Running { pid } => d.i64("pid", i64::from(pid)),
        RunState::Exited {
            signal: Some(s), ..
        } => d.i64("signal", i64::from(s)),
        RunState::Exited { signal: None, .. } => d,
        RunState::Killed { reason } => d.str("reason", reason),
        RunState::Failed { step, error } => d.str("step", step).str("error", error),
    };
    d.build()
}
