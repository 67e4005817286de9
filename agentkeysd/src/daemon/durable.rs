//! Durable reads (MCP): an agent's read whose audit row is committed and fsynced before the
//! value leaves the daemon, done in batches by one task.
//!
//! A reader hands its read to the batcher ([`Shared::durable_read`]) and waits for the
//! answer. The batcher takes every read waiting (up to [`MAX_BATCH`]) and, on the blocking
//! pool:
//! 1. under the store lock, does each read in arrival order (the store's checks for that
//!    session, so a revocation refuses the very next read; a served read queues its row),
//!    then commits the queue in one transaction without an fsync ([`Store::flush_audit`]);
//! 2. with the lock released, fsyncs the WAL once ([`WalSync::sync`]: see
//!    [`crate::store`]'s `durable` module for why that makes the commit durable); without a
//!    WAL handle, step 1 commits with `synchronous=FULL` instead;
//! 3. answers every reader: a served value only when steps 1 and 2 succeeded, otherwise
//!    [`DaemonError::AuditUnavailable`] (and reads are refused until a flush succeeds again,
//!    [`Shared::require_audit`]).
//!
//! So one lock, one transaction and one fsync carry a whole batch; no reader contends for the
//! store's mutex or hops to the blocking pool on its own, and other calls (D-Bus) take the
//! store between batches. Reads that arrive while a batch works form the next one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Actor, AgentRead, Store, WalSync};

use super::errors::DaemonError;
use super::state::Shared;

/// Longest a reader waits for its batch before it gives up (and serves nothing). Far above
/// any healthy batch; it only bounds a stuck disk or a batcher that was never started.
const DURABLE_WAIT: Duration = Duration::from_secs(10);

/// Reads done under one lock and carried by one commit and one fsync, at most. Bounds how
/// long one batch holds the store (a read is some tens of microseconds).
pub const MAX_BATCH: usize = 256;

/// Reads that may wait for the batcher; a reader past it waits to hand its read over.
const QUEUE: usize = 1024;

/// One agent read, as the store's [`Store::agent_read`] takes it.
#[derive(Debug)]
pub struct DurableRead {
    pub actor: Actor,
    /// The agent's session id.
    pub session: String,
    pub credential: String,
    /// The owner approved this read (a `confirm` grant).
    pub confirmed: bool,
}

/// A read and where its answer goes.
#[derive(Debug)]
struct Job {
    read: DurableRead,
    reply: oneshot::Sender<Result<AgentRead, DaemonError>>,
}

/// The batcher's side: its queue, the WAL handle, and how many fsyncs it made.
#[derive(Debug)]
pub struct DurableAudit {
    wal: Option<WalSync>,
    tx: mpsc::Sender<Job>,
    /// Taken by the batcher when it starts.
    rx: std::sync::Mutex<Option<mpsc::Receiver<Job>>>,
    fsyncs: AtomicU64,
}

impl DurableAudit {
    /// The WAL handle, for other rows made durable outside the store's lock (a run's
    /// start row); `None` if the WAL could not be opened.
    pub fn wal(&self) -> Option<&WalSync> {
        self.wal.as_ref()
    }

    pub fn new(wal: Option<WalSync>) -> DurableAudit {
        let (tx, rx) = mpsc::channel(QUEUE);
        DurableAudit {
            wal,
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            fsyncs: AtomicU64::new(0),
        }
    }
}

impl Shared {
    /// Does `read` in the next batch: the store's checks, and for a served value its audit
    /// row committed and fsynced before this returns it. Needs [`Shared::spawn_audit_flusher`]
    /// running (it starts the batcher).
    pub async fn durable_read(&self, read: DurableRead) -> Result<AgentRead, DaemonError> {
        let (reply, answer) = oneshot::channel();
        let wait = async {
            self.durable()
                .tx
                .send(Job { read, reply })
                .await
                .map_err(|_| DaemonError::AuditUnavailable)?;
            answer.await.map_err(|_| DaemonError::AuditUnavailable)?
        };
        match tokio::time::timeout(DURABLE_WAIT, wait).await {
            Ok(r) => r,
            Err(_) => {
                tracing::error!(
                    "a read's audit row did not become durable in time; the read is refused"
                );
                Err(DaemonError::AuditUnavailable)
            }
        }
    }

    /// fsyncs that made durable reads' rows durable since start (for benches and `status`).
    pub fn audit_fsyncs(&self) -> u64 {
        self.durable().fsyncs.load(Ordering::Relaxed)
    }

    /// Starts the batcher (once; later calls do nothing). It runs until the runtime is
    /// dropped at exit, which drops it and its reference to the state.
    pub(super) fn spawn_durable_reads(self: &Arc<Self>) {
        let rx = self
            .durable()
            .rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(mut rx) = rx else { return };
        let shared = self.clone();
        tokio::spawn(async move {
            let mut jobs = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
                let batch = std::mem::replace(&mut jobs, Vec::with_capacity(MAX_BATCH));
                let s = shared.clone();
                // A panic in a batch drops its jobs: their readers get AuditUnavailable.
                if let Err(e) = tokio::task::spawn_blocking(move || run_batch(&s, batch)).await {
                    tracing::error!(error = %e, "a batch of durable reads failed");
                }
            }
        });
    }
}

/// One batch, on the blocking pool: the reads and their commit under the lock, the fsync
/// after it, then the answers.
fn run_batch(shared: &Shared, jobs: Vec<Job>) {
    let durable = shared.durable();
    let (answers, committed) = {
        let mut store = shared.lock_store();
        let answers: Vec<Result<AgentRead, DaemonError>> =
            jobs.iter().map(|j| read(&mut store, &j.read)).collect();
        let served = answers
            .iter()
            .any(|a| matches!(a, Ok(AgentRead::Served(..))));
        let committed = served.then(|| commit(&mut store, durable.wal.is_none()));
        (answers, committed)
    };
    // The fsync outside the lock: D-Bus calls use the store while the disk works.
    let durable_ok = committed.map(|c| {
        let result = c.and_then(|()| match &durable.wal {
            Some(wal) => wal.sync().map_err(DaemonError::from),
            None => Ok(()),
        });
        if result.is_ok() {
            durable.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        let ok = result.is_ok();
        shared.note_flush(result);
        ok
    });
    for (job, answer) in jobs.into_iter().zip(answers) {
        let answer = match answer {
            // Not durable: the value stays here (and is wiped when dropped).
            Ok(AgentRead::Served(..)) if durable_ok != Some(true) => {
                Err(DaemonError::AuditUnavailable)
            }
            other => other,
        };
        // A reader that gave up is gone; its value (if any) is dropped and wiped here.
        let _ = job.reply.send(answer);
    }
}

fn read(store: &mut Store, r: &DurableRead) -> Result<AgentRead, DaemonError> {
    Ok(store.agent_read(&r.actor, &r.session, &r.credential, r.confirmed)?)
}

/// Commits the queued rows: without an fsync when the batcher fsyncs the WAL itself,
/// with `synchronous=FULL` when there is no WAL handle.
fn commit(store: &mut Store, full: bool) -> Result<(), DaemonError> {
    let written = if full {
        store.flush_audit_full()
    } else {
        store.flush_audit()
    };
    Ok(written.map(drop)?)
}

#[cfg(test)]
#[path = "durable_tests.rs"]
mod tests;
