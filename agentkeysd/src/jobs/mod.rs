//! Runs (jobs) the daemon launches in the hardened runner, and what it remembers of them
//! while they live: who owns each, which agent it is, its cgroups (to kill it), its MCP
//! server (to close it), its state and how it ended.
//!
//! A run is started by `Jobs1.Run` ([`start`]), ends when its command exits, and is killed
//! — every process at once, through its cgroup — when it is cancelled, times out, its agent
//! is revoked or one of the agent's grants is withdrawn, or the daemon stops. A killing call
//! returns only once no process of the run is left.
//!
//! Invariants: the registry holds only live runs plus the last [`KEPT_ENDED`] ended ones
//! (so `Get` can tell how a run ended); secret values never pass through here except as
//! sealed memfds on their way to the runner.

pub mod inject;
mod run;
mod sys;
pub mod warm;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::sandbox::run_cgroups::RunCgroups;
use crate::sandbox::spec::{CgroupPlan, Limits, Net};

pub use run::{RunRequest, start};

/// Ended runs kept for `Get`/`List` after they end.
pub const KEPT_ENDED: usize = 64;

/// Where a run is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Running {
        pid: i32,
    },
    /// The command exited (code) or was killed by a signal (128 + signal, like a shell).
    Exited {
        code: i32,
        signal: Option<i32>,
    },
    /// The daemon killed it: why ("cancelled", "timed out", "agent revoked", …).
    Killed {
        reason: String,
    },
    /// The sandbox could not be built or the command not executed.
    Failed {
        step: String,
        error: String,
    },
}

impl RunState {
    pub fn name(&self) -> &'static str {
        match self {
            RunState::Running { .. } => "running",
            RunState::Exited { .. } => "exited",
            RunState::Killed { .. } => "killed",
            RunState::Failed { .. } => "failed",
        }
    }

    /// The exit status a shell would give the run: the command's (128+N for signal N), 137
    /// when it was killed, 127 when it could not be executed; `None` while it runs.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            RunState::Running { .. } => None,
            RunState::Exited { code, .. } => Some(*code),
            RunState::Killed { .. } => Some(137),
            RunState::Failed { .. } => Some(127),
        }
    }
}

/// One run.
#[derive(Debug)]
pub struct Run {
    pub id: String,
    pub owner: u32,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    pub session: Option<String>,
    pub program: String,
    pub net: Net,
    pub limits: Limits,
    pub workspace: Option<PathBuf>,
    pub runner_uid: u32,
    pub started_at: i64,
    /// Credentials handed to the run at launch (names only).
    pub injected: Vec<String>,
    cgroup: CgroupPlan,
    state: Mutex<RunState>,
    ended_at: Mutex<Option<i64>>,
    /// Set by the first kill; the run's end is then reported as killed for this reason.
    kill_reason: Mutex<Option<String>>,
    /// Becomes true once every process of the run is gone and its end is recorded.
    done: tokio::sync::watch::Sender<bool>,
    mcp: Mutex<Option<crate::mcp::McpHandle>>,
    /// The sandbox's init on the host, for forwarding signals.
    pidfd: Mutex<Option<std::os::fd::OwnedFd>>,
    /// The client's status pipe (`Run`'s `status`, non-blocking), told the end once.
    status: Mutex<Option<std::os::fd::OwnedFd>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Run {
    pub fn state(&self) -> RunState {
        lock(&self.state).clone()
    }

    pub fn ended_at(&self) -> Option<i64> {
        *lock(&self.ended_at)
    }

    pub fn is_done(&self) -> bool {
        *self.done.borrow()
    }

    /// Waits until the run has ended and its end is recorded.
    pub async fn wait_done(&self) {
        let mut rx = self.done.subscribe();
        // An error means the sender is gone, which happens only with the run itself.
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Closes the MCP socket (first: no request gets in while the processes are being
    /// killed) and kills every process in the run's cgroups, returning when they are empty.
    /// A `reason` makes the run's end a kill, if it has no reason yet (the first is the one
    /// reported); `None` only clears up after a command that ended on its own.
    async fn kill_processes(&self, cgroups: &RunCgroups, reason: Option<&str>) {
        if let Some(reason) = reason {
            lock(&self.kill_reason).get_or_insert_with(|| reason.to_owned());
        }
        if let Some(mcp) = lock(&self.mcp).take() {
            mcp.close();
        }
        let (cgroups, plan) = (cgroups.clone(), self.cgroup.clone());
        match tokio::task::spawn_blocking(move || cgroups.kill(&plan)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(run = %self.id, error = %e, "cannot kill the run's cgroup")
            }
            Err(e) => tracing::error!(run = %self.id, error = %e, "kill task failed"),
        }
    }

    /// Writes the run's end to the status pipe the client passed, if any, and closes it:
    /// one line of JSON, `{"state":"exited","exit_code":0}`. Never blocks: a client that
    /// filled or closed its pipe gets nothing (the end is still in `Get`). The line (a state
    /// name and an i32) is far below `PIPE_BUF`, so the write is all of it or nothing.
    fn tell_end(&self) {
        let Some(fd) = lock(&self.status).take() else {
            return;
        };
        let state = self.state();
        let mut line = serde_json::json!({
            "state": state.name(),
            "exit_code": state.exit_code(),
        })
        .to_string();
        line.push('\n');
        if let Err(e) = nix::unistd::write(&fd, line.as_bytes()) {
            tracing::debug!(run = %self.id, error = %e, "could not tell the end on the status pipe");
        }
    }

    /// Sends `signal` to the command (through the sandbox's init, which forwards it).
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        match lock(&self.pidfd).as_ref() {
            Some(fd) => sys::pidfd_send_signal(fd, signal),
            None => Err(std::io::Error::from_raw_os_error(libc::ESRCH)),
        }
    }
}

/// Every run the daemon knows, plus where runs live.
#[derive(Debug, Default)]
pub struct Runs {
    live: Mutex<HashMap<String, Arc<Run>>>,
    ended: Mutex<VecDeque<Arc<Run>>>,
    setup: OnceLock<Setup>,
    /// Runners started ahead of the next runs ([`warm`]), oldest first.
    warm: Mutex<Vec<crate::sandbox::launch::Warm>>,
    /// How many warm runners are being started.
    warming: AtomicUsize,
    /// Warm starts failed once: runs start cold from then on.
    warm_failed: AtomicBool,
    /// The daemon is stopping: no warm runner is started, and one that is ready only now
    /// is ended rather than kept.
    warm_closed: AtomicBool,
}

/// Where under the runtime dir runners keep their snapshots of the sandbox's `/etc`
/// (`Spec::etc_cache`).
pub const ETC_CACHE: &str = "etc-cache";

/// Makes the directory of the runners' `/etc` snapshots (root's alone), emptied of an
/// earlier daemon's unless `held_runs` runs go on: a run that outlived its daemon may have
/// its `/etc` from one (a snapshot is never changed, only added; at most
/// `etc_cache::MAX_SNAPSHOTS` are made, then runs copy). A failure is logged; runs then copy
/// their `/etc`.
fn prepare_etc_cache(dir: &std::path::Path, held_runs: usize) {
    use std::os::unix::fs::DirBuilderExt;
    let emptied = match held_runs {
        0 => std::fs::remove_dir_all(dir).or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        }),
        _ => Ok(()),
    };
    let made = emptied.and_then(
        |()| match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        },
    );
    if let Err(e) = made {
        tracing::warn!(
            dir = %dir.display(),
            error = %e,
            "no cache of the sandbox's /etc: every run copies it (about 0.3 ms more per start)"
        );
    }
}

/// Fixed at start-up.
#[derive(Debug)]
struct Setup {
    runtime_dir: PathBuf,
    /// The parents of every run's cgroups; the error says why runs cannot start.
    cgroups: Result<RunCgroups, String>,
}

impl Runs {
    /// Called once at start-up, before the bus is served.
    pub fn configure(&self, runtime_dir: PathBuf, cgroups: Result<RunCgroups, String>) {
        let held = cgroups
            .as_ref()
            .map_or(0, |c| c.held_runs(crate::store::is_run_id));
        prepare_etc_cache(&runtime_dir.join(ETC_CACHE), held);
        let _ = self.setup.set(Setup {
            runtime_dir,
            cgroups,
        });
    }

    fn setup(&self) -> Result<(&PathBuf, &RunCgroups), String> {
        let s = self
            .setup
            .get()
            .ok_or_else(|| "the run manager is not set up".to_owned())?;
        match &s.cgroups {
            Ok(c) => Ok((&s.runtime_dir, c)),
            Err(e) => Err(e.clone()),
        }
    }

    /// At shutdown, before the runs are ended: the groups kept for later runs go, and those
    /// of runs ending from now on are removed, not kept (`RunCgroups::close`).
    pub fn close_cgroups(&self) {
        if let Ok((_, cgroups)) = self.setup()
            && let Err(e) = cgroups.close()
        {
            tracing::warn!(error = %e, "could not remove the cgroups kept for later runs");
        }
    }

    /// A live or recently ended run.
    pub fn get(&self, id: &str) -> Option<Arc<Run>> {
        if let Some(r) = lock(&self.live).get(id) {
            return Some(r.clone());
        }
        lock(&self.ended).iter().find(|r| r.id == id).cloned()
    }

    /// Live and recently ended runs, oldest first; of one owner, or all (`None`).
    pub fn list(&self, owner: Option<u32>) -> Vec<Arc<Run>> {
        let mut all: Vec<Arc<Run>> = lock(&self.ended).iter().cloned().collect();
        all.extend(lock(&self.live).values().cloned());
        all.retain(|r| owner.is_none_or(|o| r.owner == o));
        all.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        all
    }

    fn insert(&self, run: Arc<Run>) {
        lock(&self.live).insert(run.id.clone(), run);
    }

    fn retire(&self, id: &str) {
        if let Some(run) = lock(&self.live).remove(id) {
            let mut ended = lock(&self.ended);
            if ended.len() >= KEPT_ENDED {
                ended.pop_front();
            }
            ended.push_back(run);
        }
    }

    /// Kills every process of `run` and returns once none is left and the end is told: its
    /// row is being written then, under the store's lock, so any later reader of the audit
    /// trail sees it. The first reason given is the one reported.
    pub async fn kill(&self, run: &Arc<Run>, reason: &str) {
        if run.is_done() {
            return;
        }
        if let Ok((_, cgroups)) = self.setup() {
            run.kill_processes(cgroups, Some(reason)).await;
        }
        run.wait_done().await;
    }

    /// Kills every live run of `agent_id` (revocation; a withdrawn grant). Returns how many.
    pub async fn kill_agent(&self, agent_id: &str, reason: &str) -> usize {
        let runs: Vec<Arc<Run>> = lock(&self.live)
            .values()
            .filter(|r| r.agent_id.as_deref() == Some(agent_id))
            .cloned()
            .collect();
        let n = runs.len();
        let kills = runs.iter().map(|r| self.kill(r, reason));
        futures_util::future::join_all(kills).await;
        n
    }

    /// Kills every live run (the daemon is stopping: nobody could revoke them afterwards).
    pub async fn kill_all(&self, reason: &str) {
        let runs: Vec<Arc<Run>> = lock(&self.live).values().cloned().collect();
        let kills = runs.iter().map(|r| self.kill(r, reason));
        futures_util::future::join_all(kills).await;
    }
}
