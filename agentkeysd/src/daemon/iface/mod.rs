//! The D-Bus interfaces served at `/dev/agentkeys/Daemon1`, one file each.
//!
//! Every method follows the same shape: enter (refused during shutdown) → ask the bus who
//! is calling → authorize from that → validate arguments → act → map errors once, in
//! [`super::errors::to_public`]. Secret bytes only ever cross as a sealed memfd.

pub mod agents;
pub mod approvals;
pub mod audit;
pub mod credentials;
pub mod daemon;
pub mod jobs;

use std::sync::Arc;

use crate::store::{Actor, AuditEntry, Outcome};

use super::authz::{AuthzError, Caller};
use super::errors::DaemonError;
use super::state::Shared;

pub(crate) fn actor(c: &Caller) -> Actor {
    Actor {
        uid: c.uid,
        pid: c.pid,
    }
}

/// Passes an authorization result through, recording a denial in the audit chain. A
/// failure to record it is logged but does not change the answer: the caller is refused
/// either way.
pub(crate) async fn audited<T>(
    shared: &Arc<Shared>,
    caller: &Caller,
    action: &'static str,
    subject: &str,
    result: Result<T, AuthzError>,
) -> Result<T, DaemonError> {
    let e = match result {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let owner = match &e {
        AuthzError::NotRoot { owner } => Some(Some(*owner)),
        AuthzError::RootOnly { .. } => Some(None),
        // Malformed input is not a denial.
        AuthzError::BadName(_) => None,
    };
    if let Some(owner) = owner {
        let (actor, subject, detail) = (actor(caller), subject.to_owned(), e.to_string());
        let recorded = shared
            .with_store(move |store| {
                let entry = AuditEntry {
                    actor: &actor,
                    owner_uid: owner,
                    action,
                    subject: &subject,
                    outcome: Outcome::Denied,
                    detail: &detail,
                };
                Ok(store.audit_denial(entry)?)
            })
            .await;
        if let Err(err) = recorded {
            tracing::error!(action, error = %super::errors::chain(&err), "could not audit a denial");
        }
    }
    Err(e.into())
}

/// The owner and bare name `arg` (`NAME` or `UID:NAME`) addresses for `caller`. A refusal
/// is audited.
pub(crate) async fn target<'a>(
    shared: &Arc<Shared>,
    caller: &Caller,
    action: &'static str,
    arg: &'a str,
) -> Result<(u32, &'a str), DaemonError> {
    audited(
        shared,
        caller,
        action,
        arg,
        super::authz::target(caller, arg),
    )
    .await
}

/// The owner a call acts for: the caller itself, or the owner it names if the caller is
/// root (or names itself). A refusal is audited.
pub(crate) async fn owner_for(
    shared: &Arc<Shared>,
    caller: &Caller,
    action: &'static str,
    subject: &str,
    named: Option<u32>,
) -> Result<u32, DaemonError> {
    audited(
        shared,
        caller,
        action,
        subject,
        super::authz::act_for(caller, named),
    )
    .await
}

/// The user name of `uid`, if the system knows one.
pub(crate) fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// Seconds since the Unix epoch (the store's clock, so rows and checks agree).
pub(crate) fn now() -> i64 {
    crate::store::now_s()
}
