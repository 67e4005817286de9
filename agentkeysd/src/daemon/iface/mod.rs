//! The D-Bus interfaces served at `/dev/agentkeys/Daemon1`, one file each.
//!
//! Every method follows the same shape: enter (refused during shutdown) → ask the bus who
//! is calling → authorize from that → validate arguments → act → map errors once, in
//! [`super::errors::to_public`]. Secret bytes only ever cross as a sealed memfd.

pub mod agents;
pub mod audit;
pub mod credentials;
pub mod daemon;

use crate::store::{Actor, AuditEntry, Outcome};

use super::authz::{AuthzError, Caller};
use super::state::Shared;

pub(crate) fn actor(c: &Caller) -> Actor {
    Actor {
        uid: c.uid,
        pid: c.pid,
    }
}

/// Records an authorization denial in the audit chain. A failure to record it is logged
/// but does not turn the denial into another error: the caller is refused either way.
pub(crate) fn audit_denial(
    shared: &Shared,
    caller: &Caller,
    action: &str,
    subject: &str,
    e: &AuthzError,
) {
    if let AuthzError::NotRoot { owner } = e {
        let actor = actor(caller);
        let detail = e.to_string();
        let entry = AuditEntry {
            actor: &actor,
            owner_uid: Some(*owner),
            action,
            subject,
            outcome: Outcome::Denied,
            detail: &detail,
        };
        if let Err(err) = shared.store().audit_denial(entry) {
            tracing::error!(action, error = %super::errors::chain(&err), "could not audit a denial");
        }
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
