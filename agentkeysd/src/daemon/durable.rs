//! Group commit of audit rows that must be durable before a secret leaves (MCP reads).
//!
//! A reader queues its row inside its store call and gets the row's sequence number; it
//! then calls [`Shared::audit_durable`], which wakes the audit flusher at once (no
//! coalescing delay) and waits until the flusher publishes "durable up to N" with N at
//! least its number. The flusher commits the queue under the store lock and fsyncs the
//! WAL after releasing it (see [`crate::store::WalSync`]), so every reader that queued
//! while the previous fsync ran shares the next one, and reads go on meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::store::WalSync;

use super::errors::DaemonError;
use super::state::Shared;

/// Longest a reader waits for its row to be durable before it gives up (and serves
/// nothing). Far above any healthy fsync; it only bounds a stuck disk or a flusher that was
/// never started.
const DURABLE_WAIT: Duration = Duration::from_secs(10);

/// What the flusher publishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DurableState {
    /// Every read row with a sequence number up to this one is committed and fsynced.
    pub seq: u64,
    /// Flushes that failed so far (a waiter that sees this move gives up).
    pub failures: u64,
}

/// The flusher's side of durable reads: the WAL handle, the published state, and the
/// request for an immediate flush.
#[derive(Debug)]
pub struct DurableAudit {
    wal: Option<WalSync>,
    state: watch::Sender<DurableState>,
    urgent: AtomicBool,
    urgent_wake: Notify,
}

impl DurableAudit {
    pub fn new(wal: Option<WalSync>) -> DurableAudit {
        DurableAudit {
            wal,
            state: watch::Sender::new(DurableState::default()),
            urgent: AtomicBool::new(false),
            urgent_wake: Notify::new(),
        }
    }

    /// Whether a durable reader is waiting (the flusher then skips its coalescing delay).
    pub fn is_urgent(&self) -> bool {
        self.urgent.load(Ordering::Acquire)
    }

    /// Takes the urgent flag: this flush will fsync.
    pub fn take_urgent(&self) -> bool {
        self.urgent.swap(false, Ordering::AcqRel)
    }

    /// Resolves when a durable reader asks for a flush.
    pub async fn urgent_requested(&self) {
        self.urgent_wake.notified().await;
    }

    fn request(&self) {
        self.urgent.store(true, Ordering::Release);
        self.urgent_wake.notify_one();
    }

    pub fn subscribe(&self) -> watch::Receiver<DurableState> {
        self.state.subscribe()
    }
}

impl Shared {
    /// Waits until the read row with sequence number `seq` (from
    /// [`crate::store::Store::audit_queued_seq`], taken in the store call that queued it)
    /// is committed and fsynced. Needs [`Shared::spawn_audit_flusher`] running.
    pub async fn audit_durable(&self, seq: u64) -> Result<(), DaemonError> {
        let durable = self.durable();
        let mut rx = durable.subscribe();
        let failures = rx.borrow().failures;
        durable.request();
        self.audit_queued();
        let wait = async {
            loop {
                let now = *rx.borrow_and_update();
                if now.seq >= seq {
                    return Ok(());
                }
                if now.failures != failures {
                    return Err(DaemonError::AuditUnavailable);
                }
                if rx.changed().await.is_err() {
                    return Err(DaemonError::AuditUnavailable);
                }
            }
        };
        match tokio::time::timeout(DURABLE_WAIT, wait).await {
            Ok(r) => r,
            Err(_) => {
                tracing::error!(
                    seq,
                    "an audit row did not become durable in time; the read is refused"
                );
                Err(DaemonError::AuditUnavailable)
            }
        }
    }
}

/// One flush by the flusher: commits the queue (FULL when a durable reader waits and there
/// is no WAL handle), then, for a durable reader, fsyncs with the store unlocked and
/// publishes the new durable sequence number.
pub(super) async fn flush(shared: &Arc<Shared>, urgent: bool) -> Result<(), DaemonError> {
    let s = shared.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<u64, DaemonError> {
        let durable = s.durable();
        let seq = {
            let mut store = s.lock_store();
            if urgent && durable.wal.is_none() {
                store.flush_audit_full()?;
            } else {
                store.flush_audit()?;
            }
            store.audit_queued_seq()
        };
        if urgent && let Some(wal) = &durable.wal {
            wal.sync()?;
        }
        Ok(seq)
    })
    .await
    .map_err(DaemonError::from)
    .and_then(|r| r);
    let durable = shared.durable();
    match result {
        Ok(seq) => {
            if urgent {
                durable.state.send_if_modified(|d| {
                    let moved = seq > d.seq;
                    d.seq = d.seq.max(seq);
                    moved
                });
            }
            Ok(())
        }
        Err(e) => {
            durable.state.send_modify(|d| d.failures += 1);
            Err(e)
        }
    }
}
