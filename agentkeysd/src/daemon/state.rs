//! What every D-Bus method shares: the store, the vault, configuration, the cache of who
//! is behind each bus connection, and the in-flight gate used by shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use tokio::sync::{OwnedRwLockReadGuard, RwLock};
use zbus::message::Header;

use crate::store::Store;
use crate::vault::Vault;

use super::authz::Caller;
use super::config::Config;
use super::errors::DaemonError;
use super::pairing::{Binding, Pairing};
use super::services::ServiceTable;

/// How long the audit flusher lets reads accumulate before it writes them in one
/// transaction. Bounds the window in which a `kill -9` can lose the row of a served read.
pub const AUDIT_FLUSH_DELAY: std::time::Duration = std::time::Duration::from_millis(5);

/// Bound on remembered connections; past it the cache starts over (it is only a cache).
const CALLER_CACHE_MAX: usize = 4096;

#[derive(Debug)]
pub struct Shared {
    store: Mutex<Store>,
    pub vault: Vault,
    pub config: Config,
    pub services: ServiceTable,
    /// Live auth requests, agent-bound connections, rate limits, the re-auth cache.
    pub pairing: Pairing,
    /// The public half of the host key that signs decisions (what children verify with).
    pub host_public: [u8; 32],
    /// Owners' login sessions as the PAM listener counts them (also asked by `Grant`
    /// for session-bound grants).
    pub logins: crate::daemon::login::Sessions,
    /// Sandboxed runs, live and recently ended.
    pub runs: crate::jobs::Runs,
    callers: Mutex<HashMap<String, Caller>>,
    // Not a OnceLock: the proxy holds the connection, whose object server holds us, so
    // shutdown must clear it to break that cycle and let the vault be zeroized on drop.
    dbus: Mutex<Option<zbus::fdo::DBusProxy<'static>>>,
    inflight: Arc<RwLock<()>>,
    stopping: AtomicBool,
    /// Wakes the audit flusher after a read queued its row.
    audit_queued: tokio::sync::Notify,
    /// Set when queued audit rows could not be written: reads are refused until a flush
    /// succeeds again, so no read goes unrecorded for long (fail closed).
    audit_failed: AtomicBool,
    /// Durable reads (MCP): the batcher's queue and the WAL handle.
    durable: super::durable::DurableAudit,
}

/// The last reference going away is what closes the store (writing any queued audit rows)
/// and zeroizes the vault; say so, so that a clean exit can be checked from the log.
impl Drop for Shared {
    fn drop(&mut self) {
        tracing::info!("secret state released: store closed, secret memory zeroized");
    }
}

/// Held for the duration of one method call; shutdown waits for all of them.
#[derive(Debug)]
pub struct InFlight {
    _guard: OwnedRwLockReadGuard<()>,
}

impl Shared {
    pub fn new(
        store: Store,
        vault: Vault,
        config: Config,
        services: ServiceTable,
        host_public: [u8; 32],
    ) -> Self {
        let durable = super::durable::DurableAudit::new(store.wal_sync());
        let pairing = Pairing::new(
            config.approvals.open_burst,
            config.approvals.open_rate_per_minute,
        );
        Self {
            host_public,
            store: Mutex::new(store),
            vault,
            config,
            services,
            pairing,
            logins: crate::daemon::login::Sessions::default(),
            runs: crate::jobs::Runs::default(),
            callers: Mutex::new(HashMap::new()),
            dbus: Mutex::new(None),
            inflight: Arc::new(RwLock::new(())),
            stopping: AtomicBool::new(false),
            audit_queued: tokio::sync::Notify::new(),
            audit_failed: AtomicBool::new(false),
            durable,
        }
    }

    /// Gives the state its handle on the bus daemon, once connected.
    pub fn set_bus(&self, proxy: Option<zbus::fdo::DBusProxy<'static>>) {
        *self.dbus.lock().unwrap_or_else(|p| p.into_inner()) = proxy;
    }

    /// Enters a method call; refused once shutdown has begun.
    pub async fn enter(&self) -> Result<InFlight, DaemonError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(DaemonError::ShuttingDown);
        }
        Ok(InFlight {
            _guard: self.inflight.clone().read_owned().await,
        })
    }

    /// Refuses new calls and waits (bounded) for those in flight to finish.
    /// Returns false when the timeout ran out first.
    pub async fn drain(&self, timeout: std::time::Duration) -> bool {
        self.stopping.store(true, Ordering::Release);
        tokio::time::timeout(timeout, self.inflight.clone().write_owned())
            .await
            .is_ok()
    }

    /// The store, locked (blocking). Only for the blocking pool and shutdown: async code
    /// uses [`Shared::with_store`]. A poisoned lock is recovered: a panic inside a store
    /// call dropped its rusqlite transaction, which rolled back, so the state is consistent.
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`Shared::store`], for the durable-read batcher's blocking half.
    pub(super) fn lock_store(&self) -> MutexGuard<'_, Store> {
        self.store()
    }

    /// The WAL handle (the durable-read batcher's), to make a run's start row durable
    /// outside the store's lock (`jobs::run`); `None` if the WAL could not be opened (start
    /// rows are then fsynced at their commit).
    pub fn run_wal(&self) -> Option<&crate::store::WalSync> {
        self.durable.wal()
    }

    pub(super) fn durable(&self) -> &super::durable::DurableAudit {
        &self.durable
    }

    /// An emitter of the daemon object's signals on its bus connection, when connected:
    /// for calls that arrive other than over D-Bus (MCP) but must tell D-Bus listeners.
    pub fn signal_emitter(&self) -> Option<zbus::object_server::SignalEmitter<'static>> {
        let dbus = self
            .dbus
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        zbus::object_server::SignalEmitter::new(
            dbus.inner().connection(),
            crate::api::names::OBJECT_PATH,
        )
        .ok()
        .map(|e| e.into_owned())
    }

    /// Runs `f` on the store: right here when the lock is free (the common case, and the
    /// cheapest: no thread hop), on the blocking pool when another call holds it — so an
    /// async worker never waits on the store's mutex, and a long call (an audit verify, a
    /// flush) cannot freeze unrelated calls.
    pub async fn with_store<T, F>(self: &Arc<Self>, f: F) -> Result<T, DaemonError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, DaemonError> + Send + 'static,
    {
        {
            let attempt = match self.store.try_lock() {
                Ok(guard) => Some(guard),
                Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(mut guard) = attempt {
                return f(&mut guard);
            }
        }
        blocking(self, f).await
    }

    /// Tells the flusher that a read queued its audit row.
    pub fn audit_queued(&self) {
        self.audit_queued.notify_one();
    }

    /// Whether the audit trail is failing to take queued rows (reads are refused then).
    pub fn audit_failed(&self) -> bool {
        self.audit_failed.load(Ordering::Acquire)
    }

    /// Starts the audit writers: the flusher, which writes queued read rows (D-Bus reads)
    /// in one transaction for every read served within [`AUDIT_FLUSH_DELAY`], and the
    /// batcher of durable reads (MCP, see [`super::durable`]). Both run until the runtime is
    /// dropped at exit (which drops them and their references to the state).
    pub fn spawn_audit_flusher(self: &Arc<Self>) {
        self.spawn_durable_reads();
        let shared = self.clone();
        tokio::spawn(async move {
            loop {
                shared.audit_queued.notified().await;
                // Coalesce: every read served in the next few ms joins this transaction.
                tokio::time::sleep(AUDIT_FLUSH_DELAY).await;
                let result = blocking(&shared, |s| Ok(s.flush_audit().map(drop)?)).await;
                shared.note_flush(result);
            }
        });
    }

    /// Refuses a read while the audit trail cannot take rows: first tries to write the
    /// queued ones again (the moment to find out whether the trail is writable again).
    pub async fn require_audit(self: &Arc<Self>) -> Result<(), DaemonError> {
        if self.audit_failed() {
            self.flush_audit_now().await;
            if self.audit_failed() {
                return Err(DaemonError::AuditUnavailable);
            }
        }
        Ok(())
    }

    /// Writes queued read rows now (a read while the trail was failing).
    pub async fn flush_audit_now(self: &Arc<Self>) {
        let result = self.with_store(|s| Ok(s.flush_audit().map(drop)?)).await;
        self.note_flush(result);
    }

    /// Writes queued read rows at shutdown, after the last call has drained.
    pub fn flush_audit_final(&self) {
        let result = self
            .store()
            .flush_audit()
            .map(drop)
            .map_err(DaemonError::from);
        self.note_flush(result);
    }

    /// Notes whether the audit trail took the queued rows (reads are refused while not).
    pub(super) fn note_flush(&self, result: Result<(), DaemonError>) {
        match result {
            Ok(()) => {
                if self.audit_failed.swap(false, Ordering::AcqRel) {
                    tracing::warn!("audit trail writable again; reads resume");
                }
            }
            Err(e) => {
                if !self.audit_failed.swap(true, Ordering::AcqRel) {
                    tracing::error!(error = %super::errors::chain(&e), "cannot write audit rows; refusing reads until this is fixed");
                }
            }
        }
    }

    /// Who sent `hdr`, from the bus daemon's `GetConnectionCredentials` (uid, pid).
    ///
    /// Cached per unique connection name: the bus never reuses a unique name and a
    /// connection's credentials are fixed when it connects, so a cached answer cannot go
    /// stale; [`Shared::forget`] drops it when the connection goes away.
    pub async fn caller(&self, hdr: &Header<'_>) -> Result<Caller, DaemonError> {
        let sender = hdr
            .sender()
            .ok_or_else(|| DaemonError::CallerUnknown("message has no sender".into()))?;
        if let Some(c) = self.callers_lock().get(sender.as_str()) {
            return Ok(*c);
        }
        let dbus = self
            .dbus
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| DaemonError::CallerUnknown("not connected to a bus".into()))?;
        let creds = dbus
            .get_connection_credentials(sender.clone().into())
            .await
            .map_err(|e| DaemonError::CallerUnknown(e.to_string()))?;
        let uid = creds
            .unix_user_id()
            .ok_or_else(|| DaemonError::CallerUnknown("bus reported no uid".into()))?;
        let caller = Caller {
            uid,
            pid: creds.process_id(),
        };
        let mut cache = self.callers_lock();
        if cache.len() >= CALLER_CACHE_MAX {
            cache.clear();
        }
        cache.insert(sender.to_string(), caller);
        Ok(caller)
    }

    /// Forgets a connection that left the bus.
    pub fn forget(&self, unique_name: &str) {
        self.callers_lock().remove(unique_name);
        self.pairing.forget(unique_name);
    }

    /// The caller of an owner's operation: refused on a connection authenticated as an
    /// agent, which acts for that agent only (an agent never stores, grants or approves).
    pub async fn owner_caller(&self, hdr: &Header<'_>) -> Result<Caller, DaemonError> {
        let caller = self.caller(hdr).await?;
        if let Some(b) = self.binding(hdr) {
            return Err(DaemonError::Denied(format!(
                "this connection is authenticated as agent '{}'; owner operations need a connection of the owner's own",
                b.agent_name
            )));
        }
        Ok(caller)
    }

    /// The agent session this connection authenticated as, if any.
    pub fn binding(&self, hdr: &Header<'_>) -> Option<Binding> {
        hdr.sender().and_then(|s| self.pairing.binding(s.as_str()))
    }

    fn callers_lock(&self) -> MutexGuard<'_, HashMap<String, Caller>> {
        self.callers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// [`blocking`], started at once, calling `locked` as soon as the store's lock is held for
/// `f`: whatever uses the store after that call waits for `f`'s work, and sees it.
pub fn blocking_announced<T, F, L>(
    shared: &Arc<Shared>,
    locked: L,
    f: F,
) -> tokio::task::JoinHandle<Result<T, DaemonError>>
where
    T: Send + 'static,
    F: FnOnce(&mut Store) -> Result<T, DaemonError> + Send + 'static,
    L: FnOnce() + Send + 'static,
{
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = shared.store();
        locked();
        f(&mut store)
    })
}

/// Runs `f` on the store on the blocking pool: for writes that fsync.
pub async fn blocking<T, F>(shared: &Arc<Shared>, f: F) -> Result<T, DaemonError>
where
    T: Send + 'static,
    F: FnOnce(&mut Store) -> Result<T, DaemonError> + Send + 'static,
{
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || f(&mut shared.store())).await?
}
