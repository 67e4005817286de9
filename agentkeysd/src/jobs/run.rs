//! Starting a run and seeing it to its end: the store's run record and session, the
//! credentials read for injection, the MCP socket, the spec, the runner, and the bookkeeping
//! when the command exits or is killed.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::daemon::authz::Caller;
use crate::daemon::errors::DaemonError;
use crate::daemon::state::{Shared, blocking};
use crate::sandbox::launch::{self, Outcome};
use crate::sandbox::spec::{
    self, Ids, Limits, MCP_SOCKET_INSIDE, Net, SecretRef, Spec, WORKSPACE_INSIDE,
};
use crate::store::{Actor, AgentRead, RunStart};

use super::inject::{self, Injection, Requested, Target};
use super::{Run, RunState, lock};

/// The uid and gid an agent has inside its user namespace when its owner's cannot serve
/// (see [`inside_ids`]).
pub const INSIDE_ID: u32 = 1000;

/// `PATH` inside the sandbox; the bridge's directory last.
const SANDBOX_PATH: &str =
    "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin:/run/agentkeys/bin";

/// Everything `Jobs1.Run` asked for, validated.
#[derive(Debug)]
pub struct RunRequest {
    pub caller: Caller,
    pub owner: u32,
    /// Agent id, name, alias or e-mail of `owner`; `None`: a run without an agent (no keys,
    /// no MCP socket).
    pub agent: Option<String>,
    pub argv: Vec<String>,
    /// The workspace, opened by the daemon (`O_PATH|O_DIRECTORY`) after checking the
    /// owner may use it; the runner binds what this fd refers to, so a path swapped after
    /// the check changes nothing.
    pub workspace: Option<(PathBuf, OwnedFd)>,
    /// Plain variables the client passed through (TERM, LANG, …), already filtered.
    pub environment: Vec<(String, String)>,
    pub requested: Requested,
    pub net: Net,
    pub limits: Limits,
    pub timeout: Option<Duration>,
    pub stdio: [OwnedFd; 3],
    pub tty: bool,
    /// The write end of the client's status pipe, made non-blocking: told the run's end.
    pub status: Option<OwnedFd>,
}

/// Starts a run; returns once the command runs in its sandbox (or why it could not).
pub async fn start(
    shared: &Arc<Shared>,
    conn: &zbus::Connection,
    req: RunRequest,
) -> Result<Arc<Run>, DaemonError> {
    let runs = &shared.runs;
    let (runtime_dir, cgroups) =
        runs.setup()
            .map(|(d, c)| (d.clone(), c.clone()))
            .map_err(|e| {
                DaemonError::Unavailable(format!(
                    "sandboxed runs are unavailable on this host: {e}"
                ))
            })?;
    let run_id = crate::store::new_run_id()?;
    let actor = Actor {
        uid: req.caller.uid,
        pid: req.caller.pid,
    };
    let program = req.argv.first().cloned().unwrap_or_default();
    // The run session's key: only the public half is kept (nobody signs with it).
    let pubkey = run_session_key()?;
    let identity = {
        let (owner, agent, id, prog) = (
            req.owner,
            req.agent.clone(),
            run_id.clone(),
            program.clone(),
        );
        let workspace = req.workspace.as_ref().map(|(p, _)| p.display().to_string());
        let (net, uid_range) = (req.net, shared.config.runner.uid_range());
        let ttl_s = i64::from(shared.config.approvals.session_ttl_s);
        // The start row is made durable below, while the sandbox is built (`record_start`);
        // only without a WAL handle is it fsynced at its commit.
        let fsync = shared.run_wal().is_none();
        blocking(shared, move |s| {
            let run = RunStart {
                run_id: &id,
                program: &prog,
                net: net.as_str(),
                workspace: workspace.as_deref(),
                uid_range,
                pubkey,
                ttl_s,
                fsync,
            };
            Ok(s.start_run(&actor, owner, agent.as_deref(), &run, &uid_known)?)
        })
        .await?
    };
    let session = identity.session.as_ref().map(|s| s.session.id.clone());
    let agent = identity.session.as_ref().map(|s| s.agent.clone());
    // From here on, a failure must end the run's record and session again.
    let ending = Ending {
        shared: shared.clone(),
        actor,
        owner: req.owner,
        run_id: run_id.clone(),
        session: session.clone(),
    };
    let secrets = match &agent {
        Some(a) => {
            match read_injections(shared, &actor, a, session.as_deref(), &req.requested).await {
                Ok(s) => s,
                Err(e) => {
                    ending.end(&format!("failed: injection: {e}")).await;
                    return Err(e);
                }
            }
        }
        None if !req.requested.env.is_empty() || !req.requested.files.is_empty() => {
            ending
                .end("failed: credentials asked for without an agent")
                .await;
            return Err(DaemonError::Invalid(
                "--env and --file inject an agent's credentials: name the agent with --agent"
                    .into(),
            ));
        }
        None => Vec::new(),
    };
    let run_dir = runtime_dir.join("runs").join(&run_id);
    let mcp = match (&agent, &session) {
        (Some(a), Some(sid)) => {
            match open_mcp(shared, &run_dir, &run_id, a, sid, identity.uid).await {
                Ok(m) => Some(m),
                Err(e) => {
                    ending.end(&format!("failed: mcp socket: {e}")).await;
                    let _ = std::fs::remove_dir_all(&run_dir);
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    // A runner started ahead (its cgroups and the agent's namespaces made) if there is one; spares are made
    // after a run's end is told (see `warm`), not while this sandbox is being built. Without
    // one, an ended run's v1 groups if one is kept (`RunCgroups::adopt`).
    let warm = super::warm::take(shared);
    let plan = warm
        .as_ref()
        .map_or_else(|| cgroups.adopt(&run_id), |w| w.plan().clone());
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut secret_env = Vec::new();
    let mut secret_files = Vec::new();
    for (injection, fd) in secrets {
        let r = SecretRef {
            name: match &injection.target {
                Target::Env(v) => v.clone(),
                Target::File(f) => f.clone(),
            },
            fd: u32::try_from(fds.len()).unwrap_or(u32::MAX),
        };
        fds.push(fd);
        match injection.target {
            Target::Env(_) => secret_env.push(r),
            Target::File(_) => secret_files.push(r),
        }
    }
    let injected: Vec<String> = secret_env
        .iter()
        .chain(&secret_files)
        .map(|r| r.name.clone())
        .collect();
    let (workspace_path, workspace_inside) = match req.workspace {
        Some((path, fd)) => {
            // The runner opens the tree through its own fd table: /proc/self/fd/N.
            let n = spec::SECRET_FD_BASE + i32::try_from(fds.len()).unwrap_or(i32::MAX);
            fds.push(fd);
            (
                Some(path),
                Some(PathBuf::from(format!("/proc/self/fd/{n}"))),
            )
        }
        None => (None, None),
    };
    let mut env = vec![
        ("PATH".to_owned(), SANDBOX_PATH.to_owned()),
        (
            "HOME".to_owned(),
            if workspace_inside.is_some() {
                WORKSPACE_INSIDE
            } else {
                "/tmp"
            }
            .to_owned(),
        ),
        ("USER".to_owned(), "agent".to_owned()),
        ("AGENTKEYS_RUN".to_owned(), run_id.clone()),
    ];
    if mcp.is_some() {
        env.push((
            "AGENTKEYS_MCP_SOCKET".to_owned(),
            MCP_SOCKET_INSIDE.to_owned(),
        ));
    }
    env.extend(req.environment);
    let gid = identity.uid;
    let owner_gid = owner_gid(req.owner);
    let (inside_uid, inside_gid) = inside_ids(req.owner, owner_gid);
    let spec = Spec {
        run_id: run_id.clone(),
        argv: req.argv,
        env,
        secret_env,
        secret_files,
        ids: Ids {
            agent_uid: identity.uid,
            agent_gid: gid,
            owner_uid: req.owner,
            owner_gid,
            inside_uid,
            inside_gid,
        },
        cwd: PathBuf::from(if workspace_inside.is_some() {
            WORKSPACE_INSIDE
        } else {
            "/"
        }),
        workspace: workspace_inside,
        mcp_socket: mcp.as_ref().map(|m| m.0.clone()),
        bridge: Some(shared.config.runner.agentkeysctl_path()).filter(|p| p.is_file()),
        ro_paths: shared.config.runner.ro_paths.clone(),
        net: req.net,
        limits: req.limits,
        cgroup: plan.clone(),
        tty: req.tty,
        landlock: shared.config.runner.landlock,
        hostname: agent
            .as_ref()
            .map_or_else(|| "agentkeys".to_owned(), |a| a.name.clone()),
        etc_cache: Some(runtime_dir.join(super::ETC_CACHE)),
    };
    let runner = shared.config.runner.runner_path();
    let for_launch = shared.clone();
    let launched = tokio::task::spawn_blocking(move || {
        let shared = for_launch;
        // The start row is on disk before the command runs: a warm runner builds the
        // sandbox while the disk works and waits for `go`; a cold one starts after it.
        let (mut running, recorded) = match warm {
            Some(w) => {
                let mut running = w.launch(&spec, req.stdio, fds)?;
                let recorded = record_start(&shared);
                running.go(recorded.is_ok());
                (running, recorded)
            }
            None => {
                record_start(&shared)?;
                (launch::spawn(&runner, &spec, req.stdio, fds)?, Ok(()))
            }
        };
        let started = running.started();
        Ok::<_, std::io::Error>((running, started, recorded))
    })
    .await?;
    // Unless this run took the last spare (or found none): then the next run would start
    // cold, which costs it far more than the competition costs this one.
    super::warm::refill_if_empty(shared);
    let (running, started, recorded) = match launched {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(run = %run_id, error = %e, "cannot start the runner");
            if let Some((_, h)) = &mcp {
                h.close();
            }
            cleanup_dirs(&cgroups, &plan, &run_dir);
            ending.end("failed: runner did not start").await;
            return Err(DaemonError::Unavailable(format!(
                "cannot start the sandbox runner ({}): {e}",
                shared.config.runner.runner_path().display()
            )));
        }
    };
    let pid = match started {
        Ok(pid) => pid,
        Err(_) => {
            // The sandbox could not be built: reap the runner, then say which step failed.
            let outcome = tokio::task::spawn_blocking(move || running.wait()).await;
            if let Some((_, h)) = &mcp {
                h.close();
            }
            cleanup_dirs(&cgroups, &plan, &run_dir);
            let (step, error) = match outcome {
                Ok(Outcome::SetupFailed { step, error }) => (step, error),
                Ok(other) => ("runner".to_owned(), format!("{other:?}")),
                Err(e) => ("runner".to_owned(), e.to_string()),
            };
            ending.end(&format!("failed: {step}: {error}")).await;
            if let Err(e) = recorded {
                // The runner was told not to start the command: that is the cause.
                tracing::error!(run = %run_id, error = %e, "cannot make the run's start durable");
                return Err(DaemonError::AuditUnavailable);
            }
            if step == "exec" {
                // The sandbox stood; the command is what was missing or not executable.
                return Err(DaemonError::NotFound(format!(
                    "cannot execute {program} in the sandbox: {error}"
                )));
            }
            return Err(DaemonError::Invalid(format!(
                "the sandbox could not be built: step '{step}' failed: {error}"
            )));
        }
    };
    let pidfd = super::sys::pidfd_open(pid).ok();
    let (done, _) = tokio::sync::watch::channel(false);
    let run = Arc::new(Run {
        id: run_id.clone(),
        owner: req.owner,
        agent_id: agent.as_ref().map(|a| a.id.clone()),
        agent_name: agent.as_ref().map(|a| a.name.clone()),
        session: session.clone(),
        program,
        net: req.net,
        limits: req.limits,
        workspace: workspace_path,
        runner_uid: identity.uid,
        started_at: crate::store::now_s(),
        injected,
        cgroup: plan,
        state: Mutex::new(RunState::Running { pid }),
        ended_at: Mutex::new(None),
        kill_reason: Mutex::new(None),
        done,
        mcp: Mutex::new(mcp.map(|(_, h)| h)),
        pidfd: Mutex::new(pidfd),
        status: Mutex::new(req.status),
    });
    shared.runs.insert(run.clone());
    tracing::info!(run = %run_id, owner = req.owner, agent = ?run.agent_name, net = req.net.as_str(), pid, "run started");
    emit_state(conn, &run).await;
    tokio::spawn(see_to_end(
        shared.clone(),
        conn.clone(),
        run.clone(),
        running,
        ending,
        cgroups,
        run_dir,
        req.timeout,
    ));
    Ok(run)
}

/// Makes the run's start row (committed without an fsync) durable: an fsync of the WAL,
/// which covers every transaction committed before it, outside the store's lock.
fn record_start(shared: &Shared) -> std::io::Result<()> {
    match shared.run_wal() {
        Some(wal) => wal.sync().map_err(std::io::Error::other),
        // Without the handle the row was fsynced at its commit (`RunStart::fsync`).
        None => Ok(()),
    }
}

/// Waits for the runner, killing the run at its timeout; then records the end.
#[allow(clippy::too_many_arguments)]
async fn see_to_end(
    shared: Arc<Shared>,
    conn: zbus::Connection,
    run: Arc<Run>,
    mut running: launch::Running,
    ending: Ending,
    cgroups: crate::sandbox::run_cgroups::RunCgroups,
    run_dir: PathBuf,
    timeout: Option<Duration>,
) {
    let mut wait = tokio::task::spawn_blocking(move || {
        let end = running.wait_reported();
        (end, running)
    });
    let waited = match timeout {
        Some(t) => tokio::select! {
            r = &mut wait => r,
            () = tokio::time::sleep(t) => {
                run.kill_processes(&cgroups, Some(&format!("timed out after {} s", t.as_secs()))).await;
                wait.await
            }
        },
        None => wait.await,
    };
    let ((outcome, reported), running) = match waited {
        Ok((end, running)) => (end, Some(running)),
        Err(e) => ((Outcome::RunnerDied(e.to_string()), false), None),
    };
    // A reported end comes from the init once it has killed and reaped everything the
    // command left behind (daemonized children), so no process of the agent is left; only
    // the init's own exit is still under way. Without a report the runner was killed (with
    // the run: revocation, cancel, timeout) or died: whatever is left goes now, and the
    // run ends only once the init has exited too.
    if !reported {
        run.kill_processes(&cgroups, None).await;
    }
    // A killed run (revoked, cancelled, timed out) ends only once none of its processes is
    // left, the init included: `Kill` returns then.
    if !reported || lock(&run.kill_reason).is_some() {
        wait_for_init(&run).await;
    }
    let state = match (lock(&run.kill_reason).clone(), outcome) {
        (Some(reason), _) => RunState::Killed { reason },
        (None, Outcome::Exited(code)) => RunState::Exited { code, signal: None },
        (None, Outcome::Signaled(sig)) => RunState::Exited {
            code: 128 + sig,
            signal: Some(sig),
        },
        (None, Outcome::SetupFailed { step, error }) => RunState::Failed { step, error },
        (None, Outcome::RunnerDied(why)) => RunState::Failed {
            step: "runner".into(),
            error: why,
        },
    };
    let how = match &state {
        RunState::Exited { code, signal: None } => format!("exited {code}"),
        RunState::Exited {
            signal: Some(s), ..
        } => format!("signal {s}"),
        RunState::Killed { reason } => format!("killed: {reason}"),
        RunState::Failed { step, error } => format!("failed: {step}: {error}"),
        RunState::Running { .. } => "running".into(),
    };
    *lock(&run.state) = state;
    *lock(&run.ended_at) = Some(crate::store::now_s());
    // The end is told while its row is written (the row holds the store already): first to
    // the client that started the run, which waits for exactly this, on the thread that
    // took the store (no hop back to this task first).
    let told = run.clone();
    let recorded = ending.end_announced(&how, move || told.tell_end()).await;
    shared.runs.retire(&run.id);
    run.done.send_replace(true);
    emit_state(&conn, &run).await;
    recorded.await;
    tracing::info!(run = %run.id, how, "run ended");
    // Now, in the gap before the client's next run, and not while this run was ending.
    super::warm::refill(&shared);
    // The groups can go once the init has exited too; removing them waits for the kernel
    // (an RCU grace period per hierarchy, ~10 ms here), so it happens after the end is
    // told, off its path.
    wait_for_init(&run).await;
    let plan = run.cgroup.clone();
    let _ = tokio::task::spawn_blocking(move || {
        // It exited right after its report, if it had not already.
        if let Some(mut r) = running {
            r.reap();
        }
        cleanup_dirs(&cgroups, &plan, &run_dir);
    })
    .await;
}

/// Waits (at most 10 s) for the sandbox's init to exit: its pidfd turns readable once the
/// kernel has reaped every process of its pid namespace. Once per run (the pidfd is taken).
async fn wait_for_init(run: &Run) {
    let Some(fd) = lock(&run.pidfd).take() else {
        return;
    };
    let waited = tokio::task::spawn_blocking(move || super::sys::wait_exit(&fd, 10_000)).await;
    if !matches!(waited, Ok(Ok(true))) {
        tracing::warn!(run = %run.id, "the sandbox's init did not exit within 10 s of the run's end");
    }
}

async fn emit_state(conn: &zbus::Connection, run: &Run) {
    let state = run.state();
    let emitted = conn
        .emit_signal(
            None::<()>,
            crate::api::names::OBJECT_PATH,
            crate::api::names::IFACE_JOBS,
            "JobStateChanged",
            &(run.id.as_str(), state.name()),
        )
        .await;
    if let Err(e) = emitted {
        tracing::warn!(run = %run.id, error = %e, "could not emit JobStateChanged");
    }
}

/// Ends the run's record and session (once).
#[derive(Debug)]
struct Ending {
    shared: Arc<Shared>,
    actor: Actor,
    owner: u32,
    run_id: String,
    session: Option<String>,
}

impl Ending {
    /// Records the end in the background: returns once the record holds the store (so
    /// anything that reads the store later sees it; `held` is called then, on the thread
    /// holding it) with what finishes it. The end can be told meanwhile; the row itself
    /// commits without an fsync unless a session ends.
    async fn end_announced<H: FnOnce() + Send + 'static>(
        &self,
        how: &str,
        held: H,
    ) -> impl std::future::Future<Output = ()> + use<H> {
        let (actor, owner, id, session, how) = (
            self.actor,
            self.owner,
            self.run_id.clone(),
            self.session.clone(),
            how.to_owned(),
        );
        let (locked, is_locked) = tokio::sync::oneshot::channel();
        let run_id = id.clone();
        let on_lock = move || {
            held();
            let _ = locked.send(());
        };
        let write = crate::daemon::state::blocking_announced(&self.shared, on_lock, move |s| {
            Ok(s.end_run(&actor, owner, &id, session.as_deref(), &how)?)
        });
        // An error before the lock (the task could not run) shows in `write`.
        let _ = is_locked.await;
        async move {
            let ended = match write.await {
                Ok(r) => r,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = ended {
                tracing::error!(run = %run_id, error = %crate::daemon::errors::chain(&e), "could not record the end of a run");
            }
        }
    }

    /// Records the end and returns once it is written (or its failure logged).
    async fn end(&self, how: &str) {
        self.end_announced(how, || {}).await.await;
    }
}

/// Reads each credential the run gets at launch through its session (every check of an
/// agent's read applies; each read is audited), into a sealed memfd.
async fn read_injections(
    shared: &Arc<Shared>,
    actor: &Actor,
    agent: &crate::store::AgentRecord,
    session: Option<&str>,
    requested: &Requested,
) -> Result<Vec<(Injection, OwnedFd)>, DaemonError> {
    let Some(session) = session else {
        return Ok(Vec::new());
    };
    shared.require_audit().await?;
    let (owner, agent_id) = (agent.owner_uid, agent.id.clone());
    let grants = shared
        .with_store(move |s| Ok(s.grants_of(owner, &agent_id)?))
        .await?;
    let services = shared.services.clone();
    let plan = inject::plan(&grants, requested, crate::store::now_s(), |c| {
        services.default_env(c)
    })
    .map_err(|e| DaemonError::Invalid(e.to_string()))?;
    let mut out = Vec::with_capacity(plan.len());
    for injection in plan {
        let (actor, session, cred) = (*actor, session.to_owned(), injection.credential.clone());
        let read = shared
            .with_store(move |s| Ok(s.agent_read(&actor, &session, &cred, false)?))
            .await?;
        shared.audit_queued();
        match read {
            AgentRead::Served(_meta, secret) => {
                let fd = crate::vault::sealed_memfd_from_secret(&secret)?;
                drop(secret);
                out.push((injection, fd));
            }
            AgentRead::NeedsConfirmation { .. } => {
                return Err(DaemonError::Invalid(format!(
                    "credential '{}' needs the owner's confirmation for each use; the agent asks for it over MCP",
                    injection.credential
                )));
            }
        }
    }
    Ok(out)
}

/// Creates the run's directory and MCP socket (owned by the agent's uid, 0600: only the
/// agent's processes can connect; the directory is root's, 0711) and serves MCP on it.
async fn open_mcp(
    shared: &Arc<Shared>,
    run_dir: &Path,
    run_id: &str,
    agent: &crate::store::AgentRecord,
    session: &str,
    uid: u32,
) -> Result<(PathBuf, crate::mcp::McpHandle), DaemonError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |what: &str, e: std::io::Error| DaemonError::Unavailable(format!("{what}: {e}"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(run_dir)
        .map_err(|e| io("creating the run directory", e))?;
    let path = run_dir.join("mcp.sock");
    let listener =
        tokio::net::UnixListener::bind(&path).map_err(|e| io("binding the MCP socket", e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io("setting the MCP socket's mode", e))?;
    std::os::unix::fs::chown(&path, Some(uid), Some(uid))
        .map_err(|e| io("handing the MCP socket to the agent's uid", e))?;
    let handle = crate::mcp::serve(
        shared.clone(),
        crate::mcp::McpAgent {
            job_id: run_id.to_owned(),
            agent_id: agent.id.clone(),
            agent_name: agent.name.clone(),
            owner: agent.owner_uid,
            session: session.to_owned(),
            uid,
        },
        listener,
    );
    Ok((path, handle))
}

fn cleanup_dirs(
    cgroups: &crate::sandbox::run_cgroups::RunCgroups,
    plan: &spec::CgroupPlan,
    run_dir: &Path,
) {
    // Kept for a later run (v1), or removed.
    if let Err(e) = cgroups.recycle(plan) {
        tracing::warn!(error = %e, "could not remove a run's cgroups");
    }
    if let Err(e) = std::fs::remove_dir_all(run_dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %run_dir.display(), error = %e, "could not remove a run's directory");
    }
}

/// Whether the system's user database knows `uid` (such uids are never given to agents).
fn uid_known(uid: u32) -> bool {
    !matches!(nix::unistd::User::from_uid(uid.into()), Ok(None))
}

/// The owner's primary group (what the workspace's new files get on disk).
/// The ids the agent has inside: its owner's, as podman's `keep-id` gives them (the
/// workspace shows the owner's files as the agent's own, with the numbers they have on the
/// host, and the agent's user namespace is the workspace's idmapping too, so a run makes
/// one namespace fewer); [`INSIDE_ID`] when either is root's (the agent is never root
/// inside) or the overflow id 65534 (`nobody`, which the sandbox's `/etc/passwd` has).
/// Outside, the agent is always its own uid.
fn inside_ids(owner_uid: u32, owner_gid: u32) -> (u32, u32) {
    let usable = |id: u32| id != 0 && id != OVERFLOW_ID;
    if usable(owner_uid) && usable(owner_gid) {
        (owner_uid, owner_gid)
    } else {
        (INSIDE_ID, INSIDE_ID)
    }
}

/// The kernel's overflow uid and gid (`nobody`/`nogroup`).
const OVERFLOW_ID: u32 = 65534;

fn owner_gid(owner: u32) -> u32 {
    match nix::unistd::User::from_uid(owner.into()) {
        Ok(Some(u)) => u.gid.as_raw(),
        _ => owner,
    }
}

/// A fresh Ed25519 public key for a run session (the private half is dropped at once).
fn run_session_key() -> Result<[u8; 32], DaemonError> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|e| DaemonError::Approval(format!("random: {e}")))?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    Ok(key.verifying_key().to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_has_its_owners_ids_inside_unless_they_are_root_or_nobody() {
        assert_eq!(inside_ids(1001, 1002), (1001, 1002));
        assert_eq!(inside_ids(0, 0), (INSIDE_ID, INSIDE_ID));
        assert_eq!(inside_ids(1001, 0), (INSIDE_ID, INSIDE_ID));
        assert_eq!(inside_ids(0, 1002), (INSIDE_ID, INSIDE_ID));
        assert_eq!(inside_ids(65534, 65534), (INSIDE_ID, INSIDE_ID));
        assert_eq!(inside_ids(1001, 65534), (INSIDE_ID, INSIDE_ID));
    }
}
