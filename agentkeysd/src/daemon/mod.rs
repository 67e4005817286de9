//! The daemon: start-up, the D-Bus objects, authorization and shutdown.
//!
//! Start-up is one function ([`run`]) that calls one step per line, in order:
//! load config → harden → logging → (runtime) → vault → runtime dir → store → PAM listener
//! (`<runtime-dir>/pam.sock`, [`login`]) → serve the objects on the bus → claim the bus
//! name without allowing replacement → `READY=1` → watchdog.
//! The vault comes before the store (DESIGN §5 lists store first) because the store's
//! master key is read straight into secret memory.
//!
//! While serving, `WATCHDOG=1` at half of `WATCHDOG_USEC` when systemd asks for it.
//!
//! Shutdown (SIGTERM/SIGINT): the watchdog pings end, the PAM socket goes, `STOPPING=1`,
//! release the bus name so no new call arrives, end the runs and the warm runners (with
//! their cgroups, also those of runners still being prepared), refuse and drain calls in
//! flight (all bounded by `daemon.shutdown_timeout_s`), drop the store and the vault (every
//! secret slot is zeroized on drop), exit 0.

pub mod args;
pub mod authz;
pub mod config;
pub mod durable;
pub mod errors;
pub mod harden;
pub mod iface;
pub mod logging;
pub mod login;
pub mod notify;
pub mod pairing;
pub mod pam;
pub mod runner_config;
pub mod services;
pub mod state;
mod sys;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use zbus::fdo::{DBusProxy, RequestNameFlags, RequestNameReply};

use crate::api::bus::BusChoice;
use crate::api::names::{BUS_NAME, OBJECT_PATH};
use crate::sandbox::run_cgroups::RunCgroups;
use crate::store::Store;
use crate::vault::Vault;

use args::Args;
use config::Config;
use state::Shared;

/// Why the daemon could not start; each names the step.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("hardening: {0}")]
    Harden(#[from] harden::HardenError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("secret memory: {0}")]
    Vault(#[from] crate::vault::VaultError),
    #[error("runtime directory {path}: {source}")]
    RuntimeDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("service table: {0}")]
    Services(String),
    #[error("host signing key: {0}")]
    HostKey(#[from] crate::approvals::HostKeyError),
    #[error("cannot connect to the {bus} bus: {source}")]
    Connect { bus: BusChoice, source: zbus::Error },
    #[error("cannot serve {what} on the bus: {source}")]
    Serve {
        what: &'static str,
        source: zbus::Error,
    },
    #[error(
        "another process already owns {BUS_NAME} on the {bus} bus (pid {pid})\n  fix: stop the other agentkeysd first (systemctl stop agentkeysd), or use another --bus"
    )]
    NameTaken { bus: BusChoice, pid: String },
    #[error("PAM listener: {0}")]
    PamListener(#[from] login::ListenError),
    #[error("cannot wait for signals: {0}")]
    Signals(#[source] std::io::Error),
}

/// The `agentkeysd` binary.
pub fn main() -> ExitCode {
    let args = Args::parse();
    if args.check_config {
        return check_config(&args);
    }
    match start(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %errors::chain(&e), "agentkeysd failed");
            eprintln!("agentkeysd: error: {}", errors::chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn check_config(args: &Args) -> ExitCode {
    match config::load(&args.config, !args.config_is_default()) {
        Ok(cfg) => {
            println!("# effective configuration of agentkeysd");
            for f in config::files(&args.config, false).unwrap_or_default() {
                println!("# from {}", f.display());
            }
            println!("{cfg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agentkeysd: invalid configuration: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything up to the async part, in order. Single-threaded until the runtime starts.
fn start(args: Args) -> Result<(), StartError> {
    let t0 = Instant::now();
    // Config first: it decides whether a tracer is tolerated. Reading it leaks no fd.
    let config = config::load(&args.config, !args.config_is_default())?;
    // Before hardening drops CAP_DAC_OVERRIDE: started outside systemd, at the root of a
    // hierarchy, the parent groups go into the hierarchy's root directory, which is 0555.
    // Every file it opens is closed again.
    let cgroups = prepare_cgroups();
    // Before any thread exists (the environment is edited) and before we open anything.
    let hardened = harden::harden(config.daemon.allow_tracer)?;
    // After hardening: the journald layer opens a socket that must survive it.
    logging::init(&config.log.level);
    match &cgroups {
        Err(e) => tracing::warn!(error = %e, "sandboxed runs are unavailable: no cgroups for them"),
        Ok(c) => sweep_cgroups(c),
    }
    tracing::debug!(kept = ?hardened.kept_caps, removed_env = ?hardened.removed_env, "hardened");
    if let Some(pid) = hardened.traced_by {
        tracing::warn!(
            tracer = pid,
            "running under a tracer (daemon.allow_tracer = true)"
        );
    }
    // Two workers: calls are short and the store is behind one lock anyway.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let result = runtime.block_on(run(args, config, cgroups, t0));
    // Dropping the runtime drops every task, the connection and with them the last
    // references to the store and the vault, which zeroize as they go.
    drop(runtime);
    if result.is_ok() {
        tracing::info!("stopped");
    }
    result
}

async fn run(
    args: Args,
    config: Config,
    cgroups: Result<RunCgroups, String>,
    t0: Instant,
) -> Result<(), StartError> {
    // Secret memory first: the store's master key is read straight into it.
    let vault = Vault::new(config.vault.secret_memory)?;
    ensure_runtime_dir(&args.runtime_dir)?;
    let mut store = Store::open(&args.state_dir, args.credentials_dir.as_deref(), &vault)?;
    // Session counts start at zero: no session-bound grant may survive its sessions.
    let ended = store.end_all_session_bound_grants()?;
    if ended > 0 {
        tracing::info!(
            grants = ended,
            "session-bound grants ended: no owner has a session after a restart"
        );
    }
    let services = services::ServiceTable::builtin().map_err(StartError::Services)?;
    if config.approvals.authenticate == config::Authenticate::None {
        tracing::warn!(
            "approvals.authenticate = \"none\": any process of an owner's uid can approve that \
             owner's requests without a password; for development only"
        );
    }
    // The public half is handed to every child that opens a request: derive it once.
    let host_public = crate::approvals::host_public_key(store.host_key())?;
    let shared = Arc::new(Shared::new(store, vault, config, services, host_public));
    // Where runs' cgroups go; a host without them still serves keys, and Run says why not.
    shared.runs.configure(args.runtime_dir.clone(), cgroups);
    shared.spawn_audit_flusher();
    // Before READY=1, so that a login right after start-up finds it.
    let pam_socket = login::listen(&args.runtime_dir, &shared)?;
    // Before READY=1: a SIGTERM that arrives the moment we are ready must stop us cleanly,
    // not by the default action (which would skip the drain, the audit flush and zeroizing).
    let stop = StopSignals::install()?;
    let conn = serve(&args.bus, &shared).await?;
    // Only once nothing can fail before `shutdown`, which ends them with their cgroups.
    crate::jobs::warm::refill(&shared);
    let status = format!(
        "serving on the {} bus; secret memory: {}",
        args.bus,
        shared.vault.kind().as_str()
    );
    notify::ready(&status);
    // After READY=1: systemd enforces WatchdogSec= only once the service runs.
    let watchdog = notify::Watchdog::start();
    tracing::info!(
        startup_ms = t0.elapsed().as_millis() as u64,
        secret_memory = shared.vault.kind().as_str(),
        "ready: {status}"
    );
    stop.wait().await;
    watchdog.stop().await;
    // No new logins reach a daemon that is going away (the task itself ends with the
    // runtime).
    if let Err(e) = std::fs::remove_file(&pam_socket) {
        tracing::debug!(error = %e, "could not remove the PAM socket");
    }
    shutdown(conn, &shared).await;
    Ok(())
}

/// The parent cgroups of every run (see [`RunCgroups`]).
fn prepare_cgroups() -> Result<RunCgroups, String> {
    let layout = crate::sandbox::cgroups::read_layout()
        .map_err(|e| format!("reading the cgroup layout: {e}"))?;
    RunCgroups::prepare(&layout).map_err(|e| e.to_string())
}

/// Removes the groups of runs a killed daemon left behind. Each costs kernel memory, and
/// every one in the cpu hierarchy makes each run's cpu limit dearer to set (the kernel
/// walks all the hierarchy's groups to check it).
fn sweep_cgroups(cgroups: &RunCgroups) {
    let swept = cgroups.sweep(crate::store::is_run_id);
    if swept > 0 {
        tracing::info!(
            runs = swept,
            "removed the cgroups of runs that ended without a daemon"
        );
    }
    match cgroups.sweep_spares() {
        Ok(0) => {}
        Ok(n) => tracing::info!(groups = n, "removed the cgroups a stopped daemon kept"),
        Err(e) => tracing::warn!(error = %e, "could not remove the cgroups a stopped daemon kept"),
    }
}

fn ensure_runtime_dir(path: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o755)
        .recursive(true)
        .create(path)
        .map_err(|source| StartError::RuntimeDir {
            path: path.to_path_buf(),
            source,
        })
}

/// Connects, serves every interface, then claims the well-known name — in that order, so
/// that the first call that arrives through the name finds everything in place.
async fn serve(bus: &BusChoice, shared: &Arc<Shared>) -> Result<zbus::Connection, StartError> {
    let conn = bus
        .builder()
        .build()
        .await
        .map_err(|source| StartError::Connect {
            bus: bus.clone(),
            source,
        })?;
    let dbus = DBusProxy::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(|source| StartError::Serve {
            what: "the bus proxy",
            source,
        })?;
    shared.set_bus(Some(dbus.clone()));
    let server = conn.object_server();
    let serve_err = |what| move |source| StartError::Serve { what, source };
    server
        .at(
            OBJECT_PATH,
            iface::daemon::Daemon {
                shared: shared.clone(),
            },
        )
        .await
        .map_err(serve_err("Daemon1"))?;
    server
        .at(
            OBJECT_PATH,
            iface::credentials::Credentials {
                shared: shared.clone(),
            },
        )
        .await
        .map_err(serve_err("Credentials1"))?;
    server
        .at(
            OBJECT_PATH,
            iface::agents::Agents {
                shared: shared.clone(),
            },
        )
        .await
        .map_err(serve_err("Agents1"))?;
    server
        .at(
            OBJECT_PATH,
            iface::audit::Audit {
                shared: shared.clone(),
            },
        )
        .await
        .map_err(serve_err("Audit1"))?;
    server
        .at(
            OBJECT_PATH,
            iface::approvals::Approvals {
                shared: shared.clone(),
            },
        )
        .await
        .map_err(serve_err("Approvals1"))?;
    server
        .at(
            OBJECT_PATH,
            iface::jobs::Jobs {
                shared: shared.clone(),
            },
        )
        .await
        .map_err(serve_err("Jobs1"))?;
    spawn_forget_departed(&dbus, shared).await;
    spawn_request_sweeper(&conn, shared).await;
    // No ALLOW_REPLACEMENT and no REPLACE_EXISTING: a second daemon, or any other
    // connection, can neither take the name from us nor be handed it behind our back.
    let reply = conn
        .request_name_with_flags(BUS_NAME, RequestNameFlags::DO_NOT_QUEUE)
        .await;
    match reply {
        Ok(RequestNameReply::PrimaryOwner) | Ok(RequestNameReply::AlreadyOwner) => Ok(conn),
        Ok(RequestNameReply::Exists)
        | Ok(RequestNameReply::InQueue)
        | Err(zbus::Error::NameTaken) => {
            let pid = owner_pid(&dbus).await;
            Err(StartError::NameTaken {
                bus: bus.clone(),
                pid,
            })
        }
        Err(source) => Err(StartError::Serve {
            what: BUS_NAME,
            source,
        }),
    }
}

async fn owner_pid(dbus: &DBusProxy<'_>) -> String {
    let Ok(name) = zbus::names::BusName::try_from(BUS_NAME) else {
        return "unknown".into();
    };
    match dbus.get_connection_unix_process_id(name).await {
        Ok(pid) => pid.to_string(),
        Err(_) => "unknown".into(),
    }
}

/// Drops cached caller identities when their connection leaves the bus.
async fn spawn_forget_departed(dbus: &DBusProxy<'static>, shared: &Arc<Shared>) {
    let stream = match dbus.receive_name_owner_changed().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch departing connections; caller cache grows until its bound");
            return;
        }
    };
    let shared = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut stream = stream;
        while let Some(signal) = stream.next().await {
            let Some(shared) = shared.upgrade() else {
                break;
            };
            if let Ok(args) = signal.args()
                && args.new_owner().is_none()
                && args.name().starts_with(':')
            {
                shared.forget(args.name());
            }
        }
    });
}

/// Once a second: records pending requests whose time ran out (and says so with
/// `RequestDecided(id, false)`), and drops requests that ended long ago.
async fn spawn_request_sweeper(conn: &zbus::Connection, shared: &Arc<Shared>) {
    let iface = match conn
        .object_server()
        .interface::<_, iface::approvals::Approvals>(OBJECT_PATH)
        .await
    {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "cannot sweep expired auth requests");
            return;
        }
    };
    let shared = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let Some(shared) = shared.upgrade() else {
                break;
            };
            let now = u64::try_from(iface::now()).unwrap_or(0);
            let expired = shared.pairing.sweep(now);
            drop(shared);
            for id in &expired {
                iface::approvals::emit_decided(iface.signal_emitter(), id, false).await;
            }
        }
    });
}

/// SIGTERM and SIGINT, caught from the moment this is created.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self, StartError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(StartError::Signals)?,
            int: signal(SignalKind::interrupt()).map_err(StartError::Signals)?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = self.int.recv() => tracing::info!("SIGINT: stopping"),
        }
    }
}

async fn shutdown(conn: zbus::Connection, shared: &Arc<Shared>) {
    notify::stopping();
    // No new calls reach us once the name is gone; calls already queued are refused.
    if let Err(e) = conn.release_name(BUS_NAME).await {
        tracing::warn!(error = %e, "could not release the bus name");
    }
    let timeout = Duration::from_secs(u64::from(shared.config.daemon.shutdown_timeout_s));
    let deadline = std::time::Instant::now() + timeout;
    // Before the runs end: each end would start a warm runner, and keep its groups.
    crate::jobs::warm::close(shared);
    shared.runs.close_cgroups();
    // A run outliving its daemon could no longer be revoked: its processes go first.
    shared.runs.kill_all("agentkeysd stopped").await;
    crate::jobs::warm::stop(shared, deadline).await;
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    if !shared.drain(left).await {
        tracing::warn!("calls still in flight after {timeout:?}; stopping anyway");
    }
    // Every read served has its row in the chain before we go.
    shared.flush_audit_final();
    // Break the proxy → connection → object server → Shared cycle.
    shared.set_bus(None);
    drop(conn);
}
